"""Candidate sources, peers of one another: each takes a parsed formula unit and a prediction and returns
candidates (:class:`~cryspnet_gen.records.CandidateList`).

- :mod:`cryspnet_gen.sources.cryspnet`: structures built by pyxtal in the predicted (lattice, space group) pairs;
- :mod:`cryspnet_gen.sources.templates`: known structures of the same anonymous formula, substituted and scaled.

A new source is one more package here with a function ``(FormulaUnit, Prediction, GenerateOptions, ...) ->
CandidateList``; :mod:`cryspnet_gen.generate` asks it and :mod:`cryspnet_gen.ranking` merges its candidates.
"""
