"""Plays the seed's Laravel command: answers actions published on ``*_sender``."""
