"""Visual and audio encoders."""
