"""hookyard: a webhook receiver and event router for image-generation APIs."""

__version__ = "0.1.0"
