"""Package metadata for the QC-StyleGAN codebase (editable install: ``pip install -e .``)."""
from setuptools import find_packages, setup

setup(
    name="qc-stylegan",
    version="0.1.0",
    description="Quality Controllable StyleGAN (NeurIPS 2022): generation, training, inversion, restoration",
    packages=find_packages(include=["dnnlib*", "torch_utils*", "training*", "degradations*", "faces*",
                                    "inversion*", "apps*", "evaluation*", "metrics*", "explorer*"]),
    package_data={"torch_utils": ["ops/*.cu", "ops/*.cpp", "ops/*.h"], "metrics": ["data/*"],
                  "explorer": ["static/*.html", "static/*.js", "static/*.css"],
                  "": ["*.json"]},
    py_modules=["demo", "train", "generate", "invert", "restore", "edit", "degrade", "calc_metrics",
                "dataset_tool", "convert_network", "explore"],
    python_requires=">=3.9",
    install_requires=[
        "torch>=2.0,<3",
        "numpy>=1.22",
        "click>=8.0",
        "pillow>=9.0",
        "scipy>=1.8",
        "ninja>=1.10",
        "tqdm>=4.60",
        "lpips>=0.1.4",
        "opencv-python-headless>=4.5",
    ],
    # playwright: the wheel holds only its driver; the browser test uses Debian's chromium (.ci/run)
    extras_require={"test": ["pytest>=7", "pytest-timeout>=2", "scikit-image>=0.19", "playwright>=1.40"],
                    # whole photos: dlib's HOG face detector + its 68-point landmark model (restore/edit/invert --align)
                    "faces": ["dlib-bin>=19.24", "face-recognition-models>=0.3"]},
)
