"""Whole real architectures against onnxruntime: the onnx package's light models (with seeded
random weights) and the trained ResNet-20s of ../shared/data on real CIFAR-10 images."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import oxiquant

import zoo

RTOL, ATOL = 1e-4, 1e-5


def ort_run(model: onnx.ModelProto, feeds):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))


@pytest.mark.parametrize("name", zoo.light_names())
def test_light_model_matches_onnxruntime(name):
    model = zoo.light_model(name)
    feeds = zoo.light_input(model)
    expected = ort_run(model, feeds)
    got = oxiquant.load(model).run(feeds)
    assert set(got) == set(expected)
    for k in expected:
        # Softmax outputs near 1/1000 each: compare the pre-argmax ranking too.
        np.testing.assert_allclose(got[k], expected[k], rtol=RTOL, atol=ATOL, err_msg=f"{name}:{k}")
        assert np.argmax(got[k]) == np.argmax(expected[k])


def test_light_model_weights_are_not_constant():
    # Guards the test above: with constant weights a broken kernel could still match.
    model = zoo.light_model("squeezenet")
    w = [onnx.numpy_helper.to_array(t) for t in model.graph.initializer if len(t.dims) == 4]
    assert w and all(np.std(a) > 0 for a in w)


needs_shared = pytest.mark.skipif(not zoo.SHARED_DATA.is_dir(), reason="../shared/data not present")


@needs_shared
def test_akamaster_resnet20_on_cifar_matches_onnxruntime():
    path = zoo.SHARED_DATA / "akamaster_resnet20_cifar10.onnx"
    images, labels = zoo.cifar_images(64)
    x = zoo.normalize_cifar(images, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    model = onnx.load(str(path))
    expected = ort_run(model, {"input": x})["logits"]
    got = oxiquant.load(path).run(x)["logits"]
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL)
    assert (got.argmax(1) == labels).mean() > 0.8  # a trained net on real images


@needs_shared
def test_onnc_resnet20_batch1_matches_onnxruntime():
    path = zoo.SHARED_DATA / "onnc_resnet20_cifar10.onnx"
    images, labels = zoo.cifar_images(16)
    x = zoo.normalize_cifar(images, (0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261))
    model = onnx.load(str(path))
    m = oxiquant.load(path)
    name = m.input_names[0]
    correct = 0
    for i in range(len(x)):
        xi = x[i : i + 1]
        expected = ort_run(model, {name: xi})
        got = m.run(xi)
        for k in expected:
            np.testing.assert_allclose(got[k], expected[k], rtol=RTOL, atol=ATOL)
            correct += int(got[k].argmax() == labels[i])
    assert correct >= 12
