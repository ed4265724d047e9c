"""lcam: learned class activation maps (L-CAM) and the explainers they are compared with."""
__version__ = "0.1.0"
