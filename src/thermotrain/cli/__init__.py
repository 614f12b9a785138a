"""The ``thermotrain`` command line: :mod:`.main` (``list``, ``run``, ``report``) and
:mod:`.datasets` (``datasets list|verify|fetch``)."""
