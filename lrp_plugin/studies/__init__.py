"""The paper's studies as functions: data, recipes, training, the pipeline, and reports.

``lrp demo`` and the ``tools/study_*.py`` scripts are thin layers over these modules.
"""
