"""The training CLI: ``avtoolkit fit|validate|test|predict``, a :class:`~lightning.pytorch.cli.LightningCLI`.

On top of LightningCLI:

- a parse error (an unknown option or config key, a bad value, a missing config file, an unknown class) becomes a
  :class:`~avtoolkit.errors.ConfigError` naming the key, where it was given (the command line, or the config file
  and line) and the closest valid key or class;
- ``null`` on the command line is ``None`` at any depth (jsonargparse turns it into the string ``"None"`` for an
  optional string of a class nested in another, e.g. ``--model.init_args.model.init_args.backbone_weights null``:
  see :class:`ArgumentParser`);
- before anything is built, every weight file the config names (``weights`` and ``*_weights`` options) and the
  checkpoint (``--ckpt_path``) must exist: the missing ones are listed at once, with the commands that make them;
- ``--ckpt_path`` restores the weights into the configured task and network: the checkpoint's hyperparameters are
  not merged into the config (LightningCLI's default), so a checkpoint of another network is refused;
- ``fit`` ends by printing the best checkpoint and its score; ``test`` ends with the path of each report written;
- the tasks and networks are known by their short names (``--model.help AVSegmentationTask``, and for a network
  ``--model.help FAVS``).
"""

import argparse
import importlib
import re
import shlex
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from jsonargparse import Namespace, set_parsing_settings
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback

from avtoolkit import __version__
from avtoolkit.cli import DESCRIPTION, clean_parser_message, did_you_mean, network_classes
from avtoolkit.data.datamodules import BaseAVDataModule
from avtoolkit.errors import ConfigError
from avtoolkit.tasks.base import BaseAVTask

SPECIAL_CHECKPOINTS = ("best", "last", "hpc", "registry")
"""``--ckpt_path`` values that Lightning resolves itself."""

PARSER_MODE = {"parser_mode": "omegaconf+"}
"""Configs may refer to other keys, as ``${trainer.default_root_dir}/checkpoints``: the references resolve after the
config files and the command line are merged, so ``--trainer.default_root_dir DIR`` moves every output the config
places under it. An absolute key is read from the top of the config file that holds it (see :func:`lightning_cli`)."""

ARGS_WARNING = "LightningCLI's args parameter is intended to run from within Python"
"""LightningCLI's warning when it is given arguments in a process that has some: main() passes its own (less
``--debug``), as it should."""


class ArgumentParser(LightningArgumentParser):
    """LightningCLI's parser, where ``--NAME=None`` is null (as ``--NAME=null`` is).

    jsonargparse hands an option of a class nested in another class on to that class's parser as
    ``--NAME={value}``, the value already parsed: a ``null`` arrives as the text ``None``, which an optional string
    (``str | None``, e.g. ``--model.init_args.model.init_args.backbone_weights null``) would keep as ``"None"``.
    The nested parsers are of their parent's class, so this one reads it back as null at every depth.
    """

    def parse_args(self, args: Any = None, *rest: Any, **kwargs: Any) -> Any:
        """Parse, with ``--NAME=None`` read as ``--NAME=null``."""
        if isinstance(args, list | tuple):
            args = [f"{arg[:-5]}=null" if _is_none_option(arg) else arg for arg in args]
        return super().parse_args(args, *rest, **kwargs)


def _is_none_option(arg: Any) -> bool:
    return isinstance(arg, str) and arg.startswith("--") and arg.endswith("=None") and arg.count("=") == 1


class AVToolkitCLI(LightningCLI):
    """LightningCLI with the toolkit's task and datamodule base classes (any subclass via ``class_path``)."""

    def parse_arguments(self, parser: Any, args: Any) -> None:
        """Parse (a parse error becomes a ConfigError naming the closest valid key), then check the config's files."""
        argv = list(sys.argv[1:] if args is None else args) if not isinstance(args, dict | Namespace) else []
        try:
            super().parse_arguments(parser, args)
        except argparse.ArgumentError as err:
            raise ConfigError(explain_parse_error(str(err), self._parser_for(argv), argv)) from err
        subcommand = self.config.get("subcommand")
        config = self.config[subcommand] if subcommand else self.config
        self._argv = argv
        # Before anything is built (or seeded): the checkpoint and every weight file the config names exist.
        check_checkpoint(config, argv)
        check_weight_files(config, config_files(argv))

    def _parse_ckpt_path(self) -> None:
        """Keep the configured task and network: do not merge the checkpoint's hyperparameters into the config.

        LightningCLI would build the network the checkpoint was saved with instead of the configured one, so a
        checkpoint of another network would pass unnoticed; :meth:`BaseAVTask.on_load_checkpoint` refuses it.
        """

    def _parser_for(self, argv: list[str]) -> LightningArgumentParser:
        parsers = getattr(self, "_subcommand_parsers", {})
        return next((parsers[arg] for arg in argv if arg in parsers), self.parser)

    def after_fit(self) -> None:
        """Print the best checkpoint, its score, and how to test it."""
        if self.trainer.is_global_zero:
            print(fit_summary(self.trainer, getattr(self, "_argv", [])))

    def after_test(self) -> None:
        """Print the path of each report written, last (after Lightning's table of test metrics)."""
        if not self.trainer.is_global_zero:
            return
        for callback in self.trainer.callbacks:  # type: ignore[attr-defined]
            path = getattr(callback, "report_path", None)
            if isinstance(path, Path) and path.is_file():
                print(f"Report: {path.resolve()}")


class LoggerSaveConfigCallback(SaveConfigCallback):
    """Save the parsed config next to the logs, and give it to every attached logger.

    Each logger receives the whole config (a plain dict) as the ``config`` hyperparameter through its own
    ``log_hyperparams``: W&B shows it in the run's config, TensorBoard in its hparams, CSV writes it to
    ``hparams.yaml``. (A separate key: the task's own hyperparameters, logged by Lightning, also have a ``model``.)
    """

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Send the parsed config to the loggers (called on rank zero only)."""
        config = yaml.safe_load(self.parser.dump(self.config, skip_none=False))
        for logger in trainer.loggers:
            logger.log_hyperparams({"config": config})


def lightning_cli(args: list[str] | None = None, run: bool = True) -> AVToolkitCLI:
    """The training CLI: parse ``args`` (default: the command line), instantiate, and run the subcommand.

    With ``run=False`` the arguments are parsed and the trainer, task and datamodule built, without a
    subcommand (handy in notebooks and tests). Parse errors raise :class:`~avtoolkit.errors.ConfigError`.
    """
    import avtoolkit.callbacks
    import avtoolkit.tasks.segmentation
    import avtoolkit.tasks.separation  # noqa: F401 - the tasks by their short names

    warnings.filterwarnings("ignore", message=ARGS_WARNING)
    set_parsing_settings(omegaconf_absolute_to_relative_paths=True)  # ${trainer...} under a subcommand too
    network_classes()  # the networks by their short names too
    if args is not None and any(str(arg).startswith("--model.help") for arg in args):
        args = network_help(list(args))
    return AVToolkitCLI(
        BaseAVTask,
        BaseAVDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        auto_configure_optimizers=False,
        parser_class=ArgumentParser,
        save_config_callback=LoggerSaveConfigCallback,
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"description": DESCRIPTION, "version": __version__, "exit_on_error": False, **PARSER_MODE},
        args=args,
        run=run,
    )


# -- --model.help NETWORK -------------------------------------------------------------------------------------


def network_help(argv: list[str]) -> list[str]:
    """``--model.help NETWORK`` as the help of the task's network option (``--model.help`` takes a task).

    Returns the arguments to parse: unchanged unless ``--model.help`` names a network; then its help is asked of
    the task that takes it (LightningCLI's ``--model.help`` only accepts tasks).
    """
    networks = network_classes()
    for i, arg in enumerate(argv):
        name = arg.split("=", 1)[1] if arg.startswith("--model.help=") else None
        if arg == "--model.help" and i + 1 < len(argv):
            name = argv[i + 1]
        if name is None:
            continue
        network = networks.get(name.rsplit(".", 1)[-1])
        if network is None or (name != network.__name__ and name != f"{network.__module__}.{network.__name__}"):
            return argv
        from avtoolkit.models.segmentation.base import SegmentationModel

        task = "AVSegmentationTask" if issubclass(network, SegmentationModel) else "AVSeparationTask"
        print(
            f"{network.__name__} is a network, the `model` of an {task}: below, `--model.NAME` stands for its option "
            f"--model.init_args.model.init_args.NAME (in a config: model.init_args.model.init_args.NAME). The "
            f"task's own options: avtoolkit fit --model.help {task}.\n"
        )
        end = i + (1 if "=" in arg else 2)
        return [*argv[:i], "--model", task, "--model.init_args.model.help", network.__name__, *argv[end:]]
    return argv


# -- parse errors ---------------------------------------------------------------------------------------------


_CONTEXT = re.compile(r"""^\s*(?:- )?(?:Parser key "(?P<key>[^"]+)"|Problem with given class_path '(?P<cls>[^']+)'):""")
_NOT_ACCEPTED = re.compile(r"""Option '(?P<option>[^']+)' is not accepted""")
_GROUP = re.compile(r"""(?:Group|Subcommand) '(?P<group>[^']+)' does not accept option '(?P<option>[^']+)'""")
_UNRECOGNIZED = re.compile(r"unrecognized arguments: (?P<option>--[^\s=]+)")
_NO_CLASS = re.compile(r"Expected a dot import path string: (?P<name>\S+)|Import path (?P<path>\S+) does not")
_NO_CONFIG = re.compile(r"""Parser key "config": File does not exist: '(?P<path>[^']+)'""")
_BAD_VALUE = re.compile(r"""^Parser key "(?P<key>[^"]+)":\s*\n.*?Given value: (?P<value>.*)$""", re.S)
_EXPECTED = re.compile(r"- Expected an? <class '(?P<type>[^']+)'>")


def explain_parse_error(message: str, parser: LightningArgumentParser, argv: list[str]) -> str:
    """One clear message for a jsonargparse error: the key, where it was given, the closest valid key."""
    command = next((arg for arg in argv if not arg.startswith("-")), "fit")
    see = f"(the options: avtoolkit {command} --help)"
    missing = _NO_CONFIG.search(message)
    if missing:
        path = Path(missing.group("path"))
        siblings = [p.name for p in path.parent.glob("*.y*ml")] if path.parent.is_dir() else []
        hint = did_you_mean(path.name, siblings)
        return f"config file not found: {path};{hint or ''} the experiment configs: avtoolkit list configs"
    unrecognized = _UNRECOGNIZED.search(message)
    if unrecognized:
        option = unrecognized.group("option")
        hint = did_you_mean(option, [f"--{key}" for key in parser_keys(parser)])
        return f"unknown option {option}:{hint or ''} {see}"
    group = _GROUP.search(message)
    if group:
        key = (
            group.group("option")
            if group.group("group") == command
            else f"{group.group('group')}.{group.group('option')}"
        )
        return _unknown_key(key, parser_keys(parser), argv, see)
    context: list[tuple[int, str, str]] = []  # (indent, "key" or "class", value) along the failing branch
    for line in message.splitlines():
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        while context and context[-1][0] >= indent:
            context.pop()
        found = _CONTEXT.match(line)
        if found:
            kind = "key" if found.group("key") else "class"
            context.append((indent, kind, found.group("key") or found.group("cls")))
        not_accepted = _NOT_ACCEPTED.search(line)
        if not_accepted and context and context[-1][1] == "class":
            return _unknown_class_option(not_accepted.group("option"), context, argv, see)
        if not_accepted:
            key = ".".join([_dotted(context), not_accepted.group("option")]).strip(".")
            return _unknown_key(key, parser_keys(parser), argv, see)
        no_class = _NO_CLASS.search(line)
        if no_class:
            return _unknown_class(no_class.group("name") or no_class.group("path"), context, see)
    bad_value = _BAD_VALUE.match(message)
    expected = [match.group("type") for match in _EXPECTED.finditer(message)]
    if bad_value and expected and len(expected) == len(re.findall(r"^\s*- ", message, re.M)):
        key, value = bad_value.group("key"), bad_value.group("value").strip()
        types = " or ".join(dict.fromkeys("null" if name == "NoneType" else name for name in expected))
        return f"invalid value for {key} ({_where_text(key, argv)}): expected {types}, got {value!r}. {see}"
    return f"{clean_parser_message(message)}\n{see}"


def _dotted(context: list[tuple[int, str, str]]) -> str:
    return ".".join(value if kind == "key" else "init_args" for _, kind, value in context)


def _where_text(key: str, argv: list[str]) -> str:
    where = where_given(key, argv)
    return "in the config" if where is None else where


def _unknown_key(key: str, candidates: list[str], argv: list[str], see: str) -> str:
    where = where_given(key, argv)
    if where == "on the command line":
        hint = did_you_mean(f"--{key}", [f"--{c}" for c in candidates])
        return f"unknown option --{key}:{hint or ''} {see}"
    hint = did_you_mean(key, candidates)
    return f"unknown key {key} ({where or 'in the config'}):{hint or ''} {see}"


def _unknown_class_option(option: str, context: list[tuple[int, str, str]], argv: list[str], see: str) -> str:
    """An option that the class given at the end of ``context`` does not take."""
    class_path = context[-1][2]
    short = class_path.rsplit(".", 1)[-1]
    key = f"{_dotted(context)}.{option}"
    candidates = class_options(class_path)
    top = context[0][2] if context[0][1] == "key" else ""
    if top in ("model", "data"):
        see = f"(its options: avtoolkit fit --{top}.help {short})"
        if len(context) > 2:  # a class inside the task (its network, criterion, ...): named by its own help
            see = f"(its options: avtoolkit fit --model.help {short})" if short in network_classes() else see
    where = where_given(key, argv)
    if where == "on the command line":
        keys = [arg[2:].split("=", 1)[0] for arg in argv if arg.startswith("--")]
        given = next(k for k in keys if k.rsplit(".", 1)[-1] == option)
        prefix = given[: -len(option)]
        hint = did_you_mean(option, candidates)
        hint = hint.replace(" did you mean ", f" did you mean --{prefix}") if hint else ""
        hint = hint.replace(" or ", f" or --{prefix}")
        return f"unknown option --{given}: {short} has no option {option!r};{hint} {see}"
    list_key = "[...]" if context[0][2].endswith("callbacks") else ""
    hint = did_you_mean(option, candidates)
    return (
        f"unknown key {option!r} ({where or 'in the config'}, under {context[0][2]}{list_key}): {short} has no "
        f"option {option!r};{hint or ''} {see}"
    )


def _unknown_class(name: str, context: list[tuple[int, str, str]], see: str) -> str:
    from avtoolkit.callbacks import __all__ as callbacks

    known = [*network_classes(), *callbacks, *(cls.__name__ for cls in _subclasses(BaseAVTask))]
    known += [cls.__name__ for cls in _subclasses(BaseAVDataModule)]
    key = _dotted(context[:-1] if context and context[-1][1] == "class" else context) or "a class_path"
    hint = did_you_mean(name.rsplit(".", 1)[-1], known)
    return (
        f"unknown class {name} ({key}):{hint or ''} the networks: avtoolkit list models; a class outside avtoolkit "
        f"needs its full import path. {see}"
    )


def _subclasses(base: type) -> Iterator[type]:
    subclass: type
    for subclass in base.__subclasses__():
        yield subclass
        yield from _subclasses(subclass)


def parser_keys(parser: LightningArgumentParser) -> list[str]:
    """Every option key of a parser (``trainer.max_epochs``, ``model``, ``ckpt_path``, ...)."""
    keys = []
    for action in parser._actions:
        if action.dest and action.dest not in ("help", "config", "print_config", "version"):
            keys.append(action.dest)
    return keys


def class_options(class_path: str) -> list[str]:
    """The init options of a class given by import path, as jsonargparse accepts them."""
    module, _, name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
        parser = ArgumentParser(exit_on_error=False)
        parser.add_class_arguments(cls, fail_untyped=False, sub_configs=True)
    except Exception:  # an unimportable class or an unusual signature: no suggestion
        return []
    return [key.split(".", 1)[0] for key in parser_keys(parser) if not key.endswith(".help")]


def given_configs(argv: list[str]) -> list[str]:
    """The ``--config`` files of the command line, as given."""
    given = []
    for i, arg in enumerate(argv):
        if arg in ("--config", "-c") and i + 1 < len(argv):
            given.append(argv[i + 1])
        elif arg.startswith(("--config=", "-c=")):
            given.append(arg.split("=", 1)[1])
    return given


def config_files(argv: list[str]) -> list[Path]:
    """The config files of the command line and those they name (``model: ../model/favs.yaml``), in order."""
    given = [Path(value) for value in given_configs(argv)]
    given += [Path(arg) for arg in argv if re.fullmatch(r"[^-=]+\.ya?ml", arg)]
    given = [path for path in given if path.is_file()]
    found: list[Path] = []
    while given:
        path = given.pop(0)
        if path in found:
            continue
        found.append(path)
        for match in re.finditer(r"^\s*[\w.]+:\s*['\"]?([^\s'\"#]+\.ya?ml)", path.read_text(encoding="utf-8"), re.M):
            named = Path(match.group(1))
            named = named if named.is_absolute() else path.parent / named
            if named.is_file():
                given.append(named)
    return found


def where_given(key: str, argv: list[str]) -> str | None:
    """Where an option was set: on the command line, or the config file and line that has its last part."""
    option = key.rsplit(".", 1)[-1]
    for arg in argv:
        if arg.startswith("--") and arg[2:].split("=", 1)[0].rsplit(".", 1)[-1] == option:
            return "on the command line"
    for path in config_files(argv):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if re.match(rf"\s*(- )?{re.escape(option)}\s*:", line):
                return f"{path}, line {number}"
    return None


# -- files that must exist before anything is built -----------------------------------------------------------


def check_checkpoint(config: Namespace, argv: list[str]) -> None:
    """The ``--ckpt_path`` file exists (or is one of Lightning's names: best, last, ...)."""
    ckpt = config.get("ckpt_path")
    if ckpt is None or str(ckpt) in SPECIAL_CHECKPOINTS or str(ckpt).startswith("registry:") or "://" in str(ckpt):
        return
    path = Path(ckpt)
    if path.is_file():
        return
    folder = path.parent
    existing = sorted(folder.glob("*.ckpt")) if folder.is_dir() else []
    if existing:
        hint = f"{folder} has: {', '.join(p.name for p in existing)}"
    else:
        state = "holds no checkpoint" if folder.is_dir() else "does not exist"
        hint = f"{folder} {state}: train first, with avtoolkit fit{_config_options(argv)}"
    raise ConfigError(f"checkpoint not found: {path} (--ckpt_path). {hint}")


def _config_options(argv: list[str]) -> str:
    return "".join(f" --config {shlex.quote(value)}" for value in given_configs(argv))


def _weight_options(node: Any, key: str = "") -> Iterator[tuple[str, Namespace, str]]:
    """``(dotted key, node, name)`` of every ``weights`` / ``*_weights`` option set to a path in a config."""
    if isinstance(node, Namespace):
        for name, value in vars(node).items():
            dotted = f"{key}.{name}" if key else name
            if (name == "weights" or name.endswith("_weights")) and isinstance(value, str | Path):
                yield dotted, node, name
            else:
                yield from _weight_options(value, dotted)
    elif isinstance(node, list | tuple):
        for i, item in enumerate(node):
            yield from _weight_options(item, f"{key}[{i}]")


def header_commands(paths: list[Path]) -> list[str]:
    """The ``avtoolkit ...`` commands that config files give in their comments, in order, without duplicates."""
    commands: list[str] = []
    for path in paths:
        for line in path.read_text(encoding="utf-8").splitlines():
            match = re.match(r"\s*#\s+(avtoolkit\s.+)$", line)
            if match:
                command = re.split(r"\s{2,}\(", match.group(1))[0].strip()  # drop a trailing "   (remark)"
                if command not in commands:
                    commands.append(command)
    return commands


def _derived_command(config: Namespace, node: Namespace, name: str, path: str) -> str | None:
    """The pre-training command that makes a segmentation network's encoder weights, from the config itself."""
    data = config.get("data")
    data_args = data.get("init_args") if isinstance(data, Namespace) else None
    if name == "audio_weights":
        root = "S4_ROOT"  # VGGish learns the categories of an S4-layout tree
        if isinstance(data_args, Namespace) and data_args.get("dataset") == "s4":
            root = str(data_args.get("root"))
        return f"avtoolkit pretrain vggish {root} {path} --width {node.get('audio_width', 1.0)}"
    if name == "backbone_weights":
        size = data_args.get("image_size") if isinstance(data_args, Namespace) else None
        command = f"avtoolkit pretrain backbone {path} --backbone {node.get('backbone', 'resnet18')}"
        return command + (f" --image_size {size}" if size else "")
    return None


def check_weight_files(config: Namespace, files: list[Path]) -> None:
    """Every weight file the config names exists; else one error lists them all with the commands that make them.

    The commands are those of the config files' comments that name a missing file (with, before them, those that
    make a missing input of theirs, e.g. the dataset VGGish learns from), else derived from the config
    (``avtoolkit pretrain vggish|backbone`` for a segmentation network's ``audio_weights``/``backbone_weights``).
    """
    missing = [(key, str(node[name])) for key, node, name in _weight_options(config) if not Path(node[name]).exists()]
    if not missing:
        return
    header = header_commands(files)
    needed = {path for _, path in missing}
    chosen: list[str] = []
    derived: list[str] = []
    while True:
        more = [c for c in header if c not in chosen and needed & set(shlex.split(c)[2:])]
        if not more:
            break
        chosen += more
        for command in more:  # the inputs of a chosen command that do not exist yet: what makes them too
            needed |= {t for t in shlex.split(command)[3:] if "/" in t and not Path(t).exists()}
    made = {token for command in chosen for token in shlex.split(command)}
    for _, node, name in _weight_options(config):
        path = str(node[name])
        if not Path(path).exists() and path not in made:
            derived_command = _derived_command(config, node, name, path)
            if derived_command is not None:
                derived.append(derived_command)
    commands = [c for c in header if c in chosen] + derived
    width = max(len(path) for _, path in missing) + 2
    lines = ["weight files named by the config do not exist:"]
    lines += [f"  {path:<{width}}({key})" for key, path in missing]
    if commands:
        lines += ["Make them with" + (" (from the config's comments):" if chosen else ":")]
        lines += [f"  {command}" for command in commands]
    orphans = [path for _, path in missing if path not in {t for c in commands for t in shlex.split(c)}]
    if orphans:
        lines.append(f"No avtoolkit command makes {', '.join(orphans)}: point the option at a local file.")
    lines.append(f"Or start from random weights: set the option to null (e.g. --{missing[0][0]} null).")
    raise ConfigError("\n".join(lines))


# -- the end of fit -------------------------------------------------------------------------------------------


def fit_summary(trainer: Trainer, argv: list[str]) -> str:
    """The best checkpoint and its score (or the last checkpoint), and the command that tests it."""
    callback = trainer.checkpoint_callback
    if not isinstance(callback, ModelCheckpoint):
        return "No checkpoint was saved (no ModelCheckpoint callback)."
    path = callback.best_model_path or callback.last_model_path
    if not path:
        return "No checkpoint was saved."
    score = callback.best_model_score
    if callback.best_model_path and callback.monitor and score is not None:
        line = f"Best checkpoint: {Path(path).resolve()} ({callback.monitor} = {float(score):.4g})"
    else:
        line = f"Last checkpoint: {Path(path).resolve()}"
    return f"{line}\nTest it: avtoolkit test{_config_options(argv)} --ckpt_path {shlex.quote(path)}"
