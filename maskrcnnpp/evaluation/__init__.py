"""Nuclei metrics (foreground IoU / Dice, DSB score, AJI, PQ) and their Detectron2 evaluator."""
