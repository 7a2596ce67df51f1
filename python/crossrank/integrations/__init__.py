"""Adapters between crossrank and other libraries.

Each module imports its library only when it is imported itself, so ``import crossrank`` never
needs them:

* :mod:`crossrank.integrations.langchain`: :class:`CrossrankRerank`, a LangChain document
  compressor (``pip install "crossrank[langchain]"``, langchain-core only);
* :mod:`crossrank.integrations.ray`: :class:`Scorer`, a callable class for Ray Data's
  ``Dataset.map_batches`` that loads the model once per worker (``pip install "crossrank[ray]"``).
"""
