"""Optional inference extras: AnomalyDINO's rotated references and background masking, and tiled mode."""
