"""Imports the feature modules of the access-control families so they register themselves."""
