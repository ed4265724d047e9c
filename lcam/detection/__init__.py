"""Object detectors behind one small interface, D-RISE, and detection insertion/deletion."""
