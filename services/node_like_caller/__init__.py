"""Plays the seed's Node.js caller: a demo scenario, then pushes; or one-shot ``call``."""
