"""Stratum V1 Bitcoin mining pool server."""
