"""The digits Fréchet-distance yardstick: classifier accuracy and the real-data floor.

    python experiments/evals/digits_fd_floor.py [--image_size 8] [--draws 10]

Prints JSON: the feature network's held-out accuracy, and the FD that real
training digits get against the held-out reference at 297 and 500 samples
(mean and sd over random draws): what a perfect generator would score at that
sample size. Compare generated samples only at the same N.
"""

import argparse
import json

import numpy as np

from zoo.evals.digits_classifier import DigitsFeatures, digits_real_floor


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--image_size", type=int, default=8)
    p.add_argument("--draws", type=int, default=10)
    args = p.parse_args()
    features = DigitsFeatures.train(image_size=args.image_size)
    result = {"image_size": args.image_size, "held_out_accuracy": features.held_out_accuracy}
    for n in (297, 500):
        fds = [digits_real_floor(features, n, seed=s)["fd"] for s in range(args.draws)]
        result[f"floor_fd_{n}"] = {"mean": float(np.mean(fds)), "sd": float(np.std(fds))}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
