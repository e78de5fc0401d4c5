"""pinqi: physics-informed, learned quantitative MRI reconstruction (PINQI, Zimmermann et al.)."""

__version__ = "0.1.0"
