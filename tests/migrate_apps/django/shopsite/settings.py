"""Settings of the shop test project (made with `django-admin startproject shopsite`, trimmed).

The database comes from DATABASE_URL, as the deploy sets it: postgresql[+psycopg]://,
mysql[+pymysql]:// (through PyMySQL, standing in for mysqlclient) or sqlite:////abs/path.db.
"""

import os
from pathlib import Path
from urllib.parse import unquote, urlsplit

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = "django-insecure-test-project-only"
DEBUG = False
ALLOWED_HOSTS = []
INSTALLED_APPS = ["shop"]
ROOT_URLCONF = "shopsite.urls"
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"


def _database(url):
    parts = urlsplit(url)
    scheme = parts.scheme.split("+", 1)[0]
    if scheme == "sqlite":
        return {"ENGINE": "django.db.backends.sqlite3", "NAME": unquote(url.split(":///", 1)[1])}
    engine = {"postgresql": "django.db.backends.postgresql", "mysql": "django.db.backends.mysql"}[scheme]
    if scheme == "mysql":
        import pymysql

        pymysql.version_info = (2, 2, 1, "final", 0)  # Django checks mysqlclient's version
        pymysql.install_as_MySQLdb()
    return {
        "ENGINE": engine,
        "NAME": unquote(parts.path.lstrip("/")),
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": parts.hostname or "",
        "PORT": str(parts.port or ""),
    }


DATABASES = {"default": _database(os.environ["DATABASE_URL"])}
