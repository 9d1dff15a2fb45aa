"""stereoq: StereoNet from raw stereo data to a deployable integer model and depth maps."""

__version__ = "0.1.0"
