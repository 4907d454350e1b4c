"""Imports the feature modules of the traffic families so they register themselves."""
