"""Box-prompted medical image segmentation appliance (runtime: numpy + OpenVINO + OpenCV)."""
