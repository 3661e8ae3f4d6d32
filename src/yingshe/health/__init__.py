"""Dataset health: `yingshe data check` (broken files, duplicates, leakage, imbalance, label errors).

One job per module: `hashing` (content and perceptual hashes), `scan` (one pass over every image),
`duplicates` (exact groups and near pairs through a faiss index), `labels` (confident learning on
out-of-fold probabilities), `grids` and `plots` (figures), `check` (the command's report).
"""
