"""Inference on raw depth frames, one path for every command that runs the networks:

    checkpoints.py   load_inference: a pose network or a centre refiner checkpoint, by its format field
    predictor.py     Predictor: centre of mass -> refiner -> crop -> network -> joints in camera mm
    crops.py         the network crops of full frames
    refiner.py       the centre refiner network, its file and its iterations
    predict.py       `murauer-dist predict` (frames_in.py opens its INPUT, overlays.py draws the results)
    centres.py       `murauer-dist evaluate --centre gt|detected|refined|all`
    export.py        `murauer-dist export`: a network as ONNX or TorchScript
`murauer-dist bench infer` (bench/infer.py) times the Predictor with each export's runtime.
"""
