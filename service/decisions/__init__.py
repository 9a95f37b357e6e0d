"""Decisions: thresholds (the rule) and calibration (with the model), acceptance rules and regions, inspection
results, and the evaluation on operator-labelled frames."""
