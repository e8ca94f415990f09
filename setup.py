"""Shim so that Beam's `--setup_file ./setup.py` can package this project for Dataflow workers.

All metadata lives in setup.cfg.
"""
import setuptools

setuptools.setup()
