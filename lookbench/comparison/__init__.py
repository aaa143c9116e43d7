"""What a comparison of Lookahead with a baseline is, and how it is judged: the rules
(``rules``), the per-sweep figures and their intervals (``sweeps``), the matched set as a closed
world (``matched``) and the descriptive figures of configurations (``metrics``).

It sits below both ``lookbench.study`` (a study that adds seeds asks it whether its verdict is
decided) and ``lookbench.report`` (which words and draws it), and needs neither: only the
hyperparameter table, ``lookbench.stats``, numpy and pandas.
"""
