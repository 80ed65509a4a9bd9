"""How well a model predicts tokens: the validation loss of training and `chargen score`.

  evaluate.py  the one loss computation over a token stream (training's validation and scores)
  files.py     `chargen score`: nats, bits and perplexity of given files
"""
