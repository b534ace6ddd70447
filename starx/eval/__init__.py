"""Evaluation of what a run learned: top-1/top-5 counts that add up across ranks, features of the
pretrained causal encoder, and the two read-outs of frozen features (weighted kNN, linear probe).

  accuracy.py  top-k counts, summed over the ranks of a data-parallel run
  features.py  one image at a time in pretraining layout -> mean of normed block outputs
  knn.py       weighted kNN (DINO): cosine similarity, k neighbours, exp(sim / T) votes
  probe.py     linear probe (MAE): BatchNorm without affine + linear layer on cached features
  readout.py   both read-outs for a run (what the pretraining stage calls)
"""
