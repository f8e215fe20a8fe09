"""keras-liver: published liver segmentation networks in Keras 3."""
__version__ = "0.1.0"
