"""The bottom layer: what every other part of dream3d builds on, importing none of them.

cameras (camera batches, samplers, view buckets), rays (ray/box intersection, stratified samples),
schema (typed config fields and their validation), schedules (annealed scalars), atomic_io (files
that appear whole or not at all), cache (derived data that can be rebuilt), timing (wall seconds
per phase of a run).
"""
