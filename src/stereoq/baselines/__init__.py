"""Classical stereo methods to compare learned models against."""
