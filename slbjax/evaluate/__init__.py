"""Scoring what the models produce: accuracy metrics, SOH estimators, generation errors."""
