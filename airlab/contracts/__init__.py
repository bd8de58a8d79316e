"""What models and estimators promise: option markers, GenerativeModel, Estimator and LossOutput.

May import: utils.
"""
