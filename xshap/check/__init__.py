"""The comparison with shap and Captum: ``crosscheck`` runs the references (``references``) beside xshap,
reads the culprits off the exported graph (``culprits``) and builds the report (``report``) with its views
(``report_html``, ``plots``); the verdict names live in ``verdicts``.

Imports ``xshap.explain`` (and through it the engine); never the other way round.
"""
