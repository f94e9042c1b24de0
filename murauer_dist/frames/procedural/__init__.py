"""The embedded dataset: a procedural hand-depth generator writing the NYU layout (`murauer-dist synth-data`)."""
