"""Following cells through a time-lapse: per-frame detections, linking (laptrack's LAP linker with gap
closing and divisions), per-track motility tables and the Cell Tracking Challenge formats."""

from .detections import Detections, detect
from .link import LinkOptions, Tracks, link

__all__ = ["Detections", "LinkOptions", "Tracks", "detect", "link"]
