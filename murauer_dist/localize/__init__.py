"""Hand localisation in raw depth frames: the closest object's centre of mass (centre.py), a learned
refinement of it (refiner.py, trained by `murauer-dist train-refiner`), pose prediction on raw frames
without ground truth (predict.py, `murauer-dist predict`) and the test protocol scored under each
localisation (centres.py, `murauer-dist evaluate --centre`)."""
