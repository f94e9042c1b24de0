"""Hand localisation in raw depth frames without a network: the closest object's centre of mass
(centre.py, on objects.py's rules and block_search.py's fast grid), and the training of the centre
refiner that moves it onto the palm (train_refiner.py, `murauer-dist train-refiner`). The refiner
network, and everything that runs networks on raw frames, is in murauer_dist/inference/."""
