"""Audio in: files, format conversion, synthetic speech and noise, capture and segmentation."""
