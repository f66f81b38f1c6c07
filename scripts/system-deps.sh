#!/usr/bin/env bash
# Make sure the system assets of the synthetic data generator are present: the FluidSynth library, a General
# MIDI soundfont and the other sound families' soundfonts (TimGM6mb, OPL-3 FM), the Noto Color Emoji font
# and the openclipart SVGs. As root on Debian/Ubuntu, install what is
# missing; otherwise print what to install and fail.
set -euo pipefail

missing=()
ldconfig -p 2>/dev/null | grep -q 'libfluidsynth\.so' || missing+=(fluidsynth)
[ -f /usr/share/sounds/sf2/FluidR3_GM.sf2 ] || [ -f /usr/share/sounds/sf3/FluidR3Mono_GM.sf3 ] \
  || missing+=(fluidr3mono-gm-soundfont)
[ -f /usr/share/sounds/sf2/TimGM6mb.sf2 ] || missing+=(timgm6mb-soundfont)
[ -f /usr/share/sounds/sf2/OPL-3_FM_128M.sf2 ] || missing+=(opl3-soundfont)
[ -f /usr/share/fonts/truetype/noto/NotoColorEmoji.ttf ] || missing+=(fonts-noto-color-emoji)
[ -d /usr/share/openclipart/svg ] || missing+=(openclipart-svg)

[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "Installing Debian packages for the synthetic data: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
  exit 0
fi

cat >&2 <<MSG
The synthetic data generator needs these system packages, which are missing: ${missing[*]}
Install them (Debian/Ubuntu):  sudo apt-get install ${missing[*]}
or point avtoolkit at your own files: avtoolkit data synth --soundfont FILE.sf2 --emoji_font FILE.ttf --clipart_dir DIR
MSG
exit 1
