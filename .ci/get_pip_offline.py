"""Offline stand-in for the get-pip script ansible-test downloads to bootstrap pip in its venvs.

ansible-test runs it as ``python get_pip_X_Y.py [pip options] pip==X.Y`` inside a fresh venv (see
ansible_test/_util/target/setup/requirements.py). Instead of the internet copy of get-pip, pip comes
from the standard library's ``ensurepip``, and then pip installs the requested pip version through
the machine's usual pip configuration (index, proxy). ensurepip points PIP_CONFIG_FILE at /dev/null
while it runs; that setting is dropped so the second step sees /etc/pip.conf again.
"""

import ensurepip
import os
import subprocess
import sys

ensurepip.bootstrap(upgrade=True)
os.environ.pop("PIP_CONFIG_FILE", None)
# get-pip's own options, which pip install does not know.
args = [arg for arg in sys.argv[1:] if arg not in ("--no-setuptools", "--no-wheel")]
sys.exit(subprocess.call([sys.executable, "-m", "pip", "install", *args]))
