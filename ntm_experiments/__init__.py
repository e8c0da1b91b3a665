"""ntm-experiments: a reproduction of Graves, Wayne & Danihelka (2014), Neural Turing Machines."""

__version__ = "0.1.0"
