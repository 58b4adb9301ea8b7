"""The sub-commands of `deeppatch` beyond list and pretrain: assess/correct/evaluate, bench, report."""
