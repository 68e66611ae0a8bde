"""The record path, the replay path and promotion (mig/member/), on real programs too."""
