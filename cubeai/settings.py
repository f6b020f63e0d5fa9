"""Cube AI settings, driven by the environment.

With nothing set the platform runs on the embedded defaults: SQLite, a local-memory cache,
the in-process Channels layer and a filesystem Celery broker, so a checkout runs at once.
`DATABASE_URL` and `REDIS_URL` switch the same code to PostgreSQL and Redis. Code reads
`settings.X`, never `os.environ`.
"""

import base64
import os
import sys
from pathlib import Path
from urllib.parse import urlsplit

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent


def envbool(name: str, default: str) -> bool:
    """Read a boolean variable; anything but a clear yes/no stops start-up."""
    value = os.environ.get(name, default).strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    sys.exit(f"{name} must be true or false, not {value!r}.")


def envint(name: str, default: str) -> int:
    """Read an integer variable; a non-integer stops start-up with one clear line."""
    value = os.environ.get(name, default)
    try:
        return int(value)
    except ValueError:
        sys.exit(f"{name} must be an integer, not {value!r}.")


def envlist(name: str, default: str = "") -> list[str]:
    """Read a comma-separated variable."""
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


def envsecret(name: str, default: str = "") -> str:
    """Read a secret from NAME, or from the file that NAME_FILE points at."""
    path = os.environ.get(f"{name}_FILE")
    if path:
        try:
            return Path(path).read_text().strip()
        except OSError as exc:
            sys.exit(f"{name}_FILE cannot be read: {exc.strerror}.")
    return os.environ.get(name, default)


def database_from_url(url: str) -> dict:
    """Parse DATABASE_URL, stopping start-up with one line if it is malformed."""
    try:
        config = dj_database_url.parse(url, conn_max_age=60, conn_health_checks=True)
    except Exception:
        sys.exit("DATABASE_URL is malformed: expected postgres://user:password@host:port/name.")
    if config.get("ENGINE") != "django.db.backends.postgresql" or not config.get("NAME"):
        sys.exit("DATABASE_URL is malformed: expected postgres://user:password@host:port/name.")
    return config


def redis_from_url(url: str) -> str:
    """Check REDIS_URL, stopping start-up with one line if it is malformed."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- reading the port validates it.
    except ValueError:
        sys.exit("REDIS_URL is malformed: expected redis://host:port/db.")
    if parts.scheme not in ("redis", "rediss", "unix") or not (parts.hostname or parts.path):
        sys.exit("REDIS_URL is malformed: expected redis://host:port/db.")
    return url


# Off unless asked for: a node that forgets the variable must not serve debug pages (which
# list every URL pattern). `make run` and the test suite turn it on explicitly.
DEBUG = envbool("DJANGO_DEBUG", "false")
SECRET_KEY = envsecret("DJANGO_SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        sys.exit(
            "DJANGO_SECRET_KEY (or DJANGO_SECRET_KEY_FILE) must be set when DEBUG is off "
            "(for development, set DJANGO_DEBUG=true)."
        )
    SECRET_KEY = "cubeai-development-only-secret-key-never-use-in-production"  # noqa: S105

# Old secret keys, still accepted for signatures and for decrypting backend credentials.
SECRET_KEY_FALLBACKS = envlist("DJANGO_SECRET_KEY_FALLBACKS")

ALLOWED_HOSTS = envlist("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
CSRF_TRUSTED_ORIGINS = envlist("DJANGO_CSRF_TRUSTED_ORIGINS")

# Where the embedded default keeps its SQLite file and Celery broker folders, and where beat
# keeps its schedule. Nothing needs to exist: the code that uses each folder creates it.
DATA_DIR = Path(os.environ.get("CUBEAI_DATA_DIR", BASE_DIR / "var")).resolve()

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "channels",
    "ninja",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    # The project itself: the platform's own commands (runplatform, bootstrap_demo).
    "cubeai",
    "domains",
    "tokens",
    "inference",
    "guardrails",
    "limits",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "cubeai.urls"
ASGI_APPLICATION = "cubeai.asgi.application"
WSGI_APPLICATION = "cubeai.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASE_URL = os.environ.get("DATABASE_URL", "")
if DATABASE_URL:
    DATABASES = {"default": database_from_url(DATABASE_URL)}
else:
    DATABASES = {
        "default": {
            # Django's SQLite backend, which also creates the file's folder on first use.
            "ENGINE": "cubeai.sqlite3",
            "NAME": DATA_DIR / "db.sqlite3",
            # IMMEDIATE: a transaction takes the write lock when it begins, waiting for it up
            # to `timeout`. SQLite's default (deferred) takes it at the first write, and a
            # transaction that read first fails at once if another process wrote meanwhile
            # (issuing a token while the web process writes its usage did).
            "OPTIONS": {
                "init_command": "PRAGMA journal_mode=WAL;",
                "timeout": 20,
                "transaction_mode": "IMMEDIATE",
            },
            # A file, not pytest's default in-memory database, so that the Celery worker and
            # server processes that tests start can open it; one per test run (pid), so that
            # concurrent runs in one checkout do not share it.
            "TEST": {"NAME": DATA_DIR / f"test-{os.getpid()}.sqlite3"},
        }
    }
# Set only by tests, for the worker and server processes they start: open the test database
# (a SQLite path or a PostgreSQL database name) instead of the configured one.
if os.environ.get("CUBEAI_TEST_DATABASE_NAME"):
    DATABASES["default"]["NAME"] = os.environ["CUBEAI_TEST_DATABASE_NAME"]

REDIS_URL = redis_from_url(os.environ["REDIS_URL"]) if os.environ.get("REDIS_URL") else ""
# Connections a process opens to Redis, per client (the cache; the limiter): pools grow to
# the concurrency they see and stop here, so a burst cannot exhaust the server's clients.
CUBEAI_REDIS_MAX_CONNECTIONS = envint("CUBEAI_REDIS_MAX_CONNECTIONS", "16")
if REDIS_URL:
    CACHES = {
        "default": {
            # A miss while Redis is away: callers fall back to the database (cubeai/cache.py).
            "BACKEND": "cubeai.cache.DegradingRedisCache",
            "LOCATION": REDIS_URL,
            "OPTIONS": {
                "socket_connect_timeout": 0.5,
                "socket_timeout": 0.5,
                # At most this many connections a process; a thread waits for a free one.
                "pool_class": "redis.BlockingConnectionPool",
                "max_connections": CUBEAI_REDIS_MAX_CONNECTIONS,
                "timeout": 0.5,
            },
        }
    }
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL]},
        }
    }
    CELERY_BROKER_URL = REDIS_URL
    CELERY_RESULT_BACKEND = REDIS_URL
    # Redelivery after a crashed worker (see the README): acks late, short visibility timeout.
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        # Longer than the longest task (a transcription job's time limit and its retries'
        # back-off), or a running task is delivered again: checked below.
        "visibility_timeout": envint("CUBEAI_CELERY_VISIBILITY_TIMEOUT", "3600"),
        "unacked_restore_interval": 1,
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    # A broker that needs no server, so a real worker process still runs beside the web.
    CELERY_BROKER_URL = "filesystem://"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(DATA_DIR / "celery" / "queue"),
        "data_folder_out": str(DATA_DIR / "celery" / "queue"),
        "control_folder": str(DATA_DIR / "celery" / "control"),
        "store_processed": False,
        "polling_interval": 0.1,
    }
    CELERY_RESULT_BACKEND = f"file://{DATA_DIR / 'celery' / 'results'}"

CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_ALWAYS_EAGER = False
# The queue tasks are sent to and workers read (tests give each run a queue of its own).
CELERY_TASK_DEFAULT_QUEUE = os.environ.get("CUBEAI_CELERY_QUEUE", "celery")
CELERY_BEAT_SCHEDULE: dict = {}
CELERY_BEAT_SCHEDULE_FILENAME = str(DATA_DIR / "celery" / "beat-schedule")

AUTH_USER_MODEL = "domains.User"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "signin"
LOGIN_REDIRECT_URL = "dashboard"
LOGOUT_REDIRECT_URL = "signin"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = DEBUG

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

EMAIL_BACKEND = os.environ.get(
    "DJANGO_EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend"
)
DEFAULT_FROM_EMAIL = os.environ.get("DJANGO_DEFAULT_FROM_EMAIL", "Cube AI <noreply@localhost>")
if os.environ.get("DJANGO_EMAIL_HOST"):
    EMAIL_HOST = os.environ["DJANGO_EMAIL_HOST"]
    EMAIL_PORT = envint("DJANGO_EMAIL_PORT", "587")
    EMAIL_HOST_USER = os.environ.get("DJANGO_EMAIL_HOST_USER", "")
    EMAIL_HOST_PASSWORD = envsecret("DJANGO_EMAIL_HOST_PASSWORD")
    EMAIL_USE_TLS = envbool("DJANGO_EMAIL_USE_TLS", "true")

# Production hardening; `manage.py check --deploy` passes with DEBUG off and HTTPS on.
SECURE_PROXY_SSL_HEADER = (
    ("HTTP_X_FORWARDED_PROTO", "https") if envbool("DJANGO_BEHIND_TLS_PROXY", "false") else None
)
SECURE_SSL_REDIRECT = envbool("DJANGO_SECURE_SSL_REDIRECT", "false" if DEBUG else "true")
SESSION_COOKIE_SECURE = not DEBUG
CSRF_COOKIE_SECURE = not DEBUG
SECURE_HSTS_SECONDS = envint("DJANGO_HSTS_SECONDS", "0" if DEBUG else "31536000")
SECURE_HSTS_INCLUDE_SUBDOMAINS = not DEBUG
SECURE_HSTS_PRELOAD = not DEBUG
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# Health probes come from load balancers over plain HTTP.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]

REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "tokens.authentication.PATAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    # The browsable API is for staff; everyone else gets JSON.
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    # JSON bodies are parsed with their depth bounded (cubeai.jsonbody), like the other API's.
    "DEFAULT_PARSER_CLASSES": [
        "cubeai.jsonbody.DRFJSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    # One place maps cubeai.exceptions (NotFound, PermissionDenied, Conflict...) to HTTP.
    "EXCEPTION_HANDLER": "domains.drf.exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Cube AI management API",
    "DESCRIPTION": "Domains, members, roles, invitations, model access and tokens.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI assets come from the drf-spectacular-sidecar package, never a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Row ids in paths (cubeai/converters.py): a longer number is no route, a 404.
    "PATH_CONVERTER_OVERRIDES": {"id": {"type": "integer", "minimum": 0, "maximum": 10**18 - 1}},
    # Every operation's error answers, in the API's envelope (domains/schema.py).
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "domains.schema.error_responses",
    ],
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json_line": {"format": "%(message)s"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain"},
        "json_lines": {"class": "logging.StreamHandler", "formatter": "json_line"},
    },
    "root": {"handlers": ["console"], "level": os.environ.get("CUBEAI_LOG_LEVEL", "INFO")},
    # One JSON object a line per API call (inference/pipeline.py), for log shippers;
    # CUBEAI_REQUEST_LOG_LEVEL=WARNING silences it.
    "loggers": {
        "cubeai.requests": {
            "handlers": ["json_lines"],
            "level": os.environ.get("CUBEAI_REQUEST_LOG_LEVEL", "INFO"),
            "propagate": False,
        }
    },
}


def parse_peppers(value: str) -> dict[str, bytes]:
    """CUBEAI_TOKEN_PEPPERS is `id:secret,id:secret`; the last entry signs new tokens."""
    result = {}
    for item in envlist_value(value):
        pepper_id, sep, secret = item.partition(":")
        if not sep or not pepper_id.isalnum() or len(secret) < 32:
            sys.exit("CUBEAI_TOKEN_PEPPERS must be id:secret pairs, each secret 32+ characters.")
        result[pepper_id] = secret.encode()
    return result


def envlist_value(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


_peppers = envsecret("CUBEAI_TOKEN_PEPPERS")
if not _peppers and not DEBUG:
    sys.exit("CUBEAI_TOKEN_PEPPERS (or CUBEAI_TOKEN_PEPPERS_FILE) must be set when DEBUG is off.")
# In development the pepper derives from the development secret key.
CUBEAI_TOKEN_PEPPERS = parse_peppers(_peppers or f"dev:{SECRET_KEY}")
CUBEAI_TOKEN_DEFAULT_DAYS = envint("CUBEAI_TOKEN_DEFAULT_DAYS", "90")
CUBEAI_TOKEN_MAX_DAYS = envint("CUBEAI_TOKEN_MAX_DAYS", "365")
# Verified tokens are cached this long; a revocation deletes the entry at once where the cache
# is shared (Redis), and this bounds how long another replica can still accept the token.
CUBEAI_TOKEN_CACHE_SECONDS = envint("CUBEAI_TOKEN_CACHE_SECONDS", "1")
# Key ids that name no live token are remembered this long, so guessing costs no queries.
CUBEAI_TOKEN_NEGATIVE_CACHE_SECONDS = envint("CUBEAI_TOKEN_NEGATIVE_CACHE_SECONDS", "300")
# Failed authentications allowed per client address and minute before it gets 429s.
CUBEAI_AUTH_FAILURES_PER_MINUTE = envint("CUBEAI_AUTH_FAILURES_PER_MINUTE", "30")
CUBEAI_TOKEN_LAST_USED_INTERVAL = 60
CUBEAI_TOKEN_EXPIRY_WARNING_DAYS = 7

CELERY_BEAT_SCHEDULE["tokens-expire-and-warn"] = {
    "task": "tokens.tasks.tokens_expire_and_warn",
    "schedule": envint("CUBEAI_TOKEN_HOUSEKEEPING_SECONDS", "3600"),
}

# The OpenAI-compatible API's hot path.
CUBEAI_ROUTING_REFRESH_SECONDS = float(os.environ.get("CUBEAI_ROUTING_REFRESH_SECONDS", "2"))
# How often each process checks the registry version; a routing snapshot is rebuilt only when
# it moved, when an attestation in it expires, or after CUBEAI_ROUTING_REBUILD_SECONDS anyway.
CUBEAI_ROUTING_REBUILD_SECONDS = float(os.environ.get("CUBEAI_ROUTING_REBUILD_SECONDS", "60"))
CUBEAI_AUTH_CACHE_SECONDS = float(os.environ.get("CUBEAI_AUTH_CACHE_SECONDS", "1"))
# Routing rebuilds, metering flushes and auth cache misses on executors of their own
# (inference/offpath.py); off, they share Django's one sync thread (the in-process tests).
CUBEAI_OFFPATH_EXECUTORS = envbool("CUBEAI_OFFPATH_EXECUTORS", "true")
CUBEAI_BREAKER_FAILURES = envint("CUBEAI_BREAKER_FAILURES", "3")
CUBEAI_BREAKER_COOLDOWN_SECONDS = float(os.environ.get("CUBEAI_BREAKER_COOLDOWN_SECONDS", "10"))
CUBEAI_UPSTREAM_CONNECT_TIMEOUT = float(os.environ.get("CUBEAI_UPSTREAM_CONNECT_TIMEOUT", "5"))
# A stream's first chunk; then the gaps between chunks (idle); a whole (non-streamed) answer.
CUBEAI_UPSTREAM_FIRST_BYTE_TIMEOUT = float(
    os.environ.get("CUBEAI_UPSTREAM_FIRST_BYTE_TIMEOUT", "120")
)
CUBEAI_UPSTREAM_IDLE_TIMEOUT = float(os.environ.get("CUBEAI_UPSTREAM_IDLE_TIMEOUT", "60"))
CUBEAI_UPSTREAM_TOTAL_TIMEOUT = float(os.environ.get("CUBEAI_UPSTREAM_TOTAL_TIMEOUT", "600"))
CUBEAI_UPSTREAM_MAX_CONNECTIONS = envint("CUBEAI_UPSTREAM_MAX_CONNECTIONS", "512")
CUBEAI_MAX_AUDIO_BYTES = envint("CUBEAI_MAX_AUDIO_BYTES", str(25 * 1024 * 1024))
CUBEAI_MAX_JSON_BYTES = envint("CUBEAI_MAX_JSON_BYTES", str(4 * 1024 * 1024))
# Reading a request: its headers (`cubeai.server`), then its body, with at most this long
# without a byte, and this long in all.
CUBEAI_HEADER_READ_TIMEOUT = float(os.environ.get("CUBEAI_HEADER_READ_TIMEOUT", "10"))
CUBEAI_BODY_READ_TIMEOUT = float(os.environ.get("CUBEAI_BODY_READ_TIMEOUT", "15"))
CUBEAI_BODY_TOTAL_TIMEOUT = float(os.environ.get("CUBEAI_BODY_TOTAL_TIMEOUT", "300"))
CUBEAI_MAX_JSON_DEPTH = envint("CUBEAI_MAX_JSON_DEPTH", "64")
CUBEAI_USAGE_FLUSH_SECONDS = float(os.environ.get("CUBEAI_USAGE_FLUSH_SECONDS", "1"))
# Each web process writes its usage through a writer process of its own
# (inference/metering_writer.py); off, the web process writes it itself. At shutdown the writer
# tries for this long to write what it still has while the database is away.
CUBEAI_METERING_WRITER = envbool("CUBEAI_METERING_WRITER", "true")
CUBEAI_METERING_WRITER_DRAIN_SECONDS = float(
    os.environ.get("CUBEAI_METERING_WRITER_DRAIN_SECONDS", "10")
)
# Limits and quotas (README.md, "Limits and quotas"): the platform defaults, which a
# domain's admins may change within the maxima below. Staff may override each in the admin
# (limits.PlatformLimits); these apply where that row leaves a field empty.
CUBEAI_RATE_LIMIT_TOKEN_RPM = envint("CUBEAI_RATE_LIMIT_TOKEN_RPM", "600")
CUBEAI_RATE_LIMIT_DOMAIN_RPM = envint("CUBEAI_RATE_LIMIT_DOMAIN_RPM", "6000")
CUBEAI_RATE_LIMIT_TOKEN_TPM = envint("CUBEAI_RATE_LIMIT_TOKEN_TPM", "200000")
CUBEAI_RATE_LIMIT_DOMAIN_TPM = envint("CUBEAI_RATE_LIMIT_DOMAIN_TPM", "2000000")
CUBEAI_RATE_LIMIT_TOKEN_STREAMS = envint("CUBEAI_RATE_LIMIT_TOKEN_STREAMS", "20")
CUBEAI_LIMITS_MAX_RPM = envint("CUBEAI_LIMITS_MAX_RPM", "100000")
CUBEAI_LIMITS_MAX_TPM = envint("CUBEAI_LIMITS_MAX_TPM", "100000000")
CUBEAI_LIMITS_MAX_STREAMS = envint("CUBEAI_LIMITS_MAX_STREAMS", "1000")
CUBEAI_LIMITS_MAX_MONTHLY_TOKENS = envint("CUBEAI_LIMITS_MAX_MONTHLY_TOKENS", str(10**12))
# Tokens reserved for the completion of a request without `max_tokens`, settled after.
CUBEAI_LIMITS_COMPLETION_RESERVE = envint("CUBEAI_LIMITS_COMPLETION_RESERVE", "512")
# A change of limits reaches every process within this many seconds.
CUBEAI_LIMITS_CACHE_SECONDS = float(os.environ.get("CUBEAI_LIMITS_CACHE_SECONDS", "2"))
# A stream whose process died frees its concurrency slot after this long.
CUBEAI_LIMITS_STREAM_TTL_SECONDS = envint("CUBEAI_LIMITS_STREAM_TTL_SECONDS", "900")
CUBEAI_LIMITS_REDIS_TIMEOUT_SECONDS = float(
    os.environ.get("CUBEAI_LIMITS_REDIS_TIMEOUT_SECONDS", "0.5")
)
# Retry-After of a fail-closed domain's 503 while Redis is unreachable.
CUBEAI_LIMITS_UNAVAILABLE_RETRY_SECONDS = envint("CUBEAI_LIMITS_UNAVAILABLE_RETRY_SECONDS", "5")
# The embedded default's limiter store, shared by the machine's processes.
CUBEAI_LIMITS_SQLITE_PATH = os.environ.get(
    "CUBEAI_LIMITS_SQLITE_PATH", str(DATA_DIR / "limits.sqlite3")
)
# Prometheus /metrics: a bearer token, or client networks allowed without one (comma-
# separated CIDRs); with neither, /metrics answers 404.
CUBEAI_METRICS_TOKEN = envsecret("CUBEAI_METRICS_TOKEN")
CUBEAI_METRICS_ALLOWED_NETWORKS = envlist("CUBEAI_METRICS_ALLOWED_NETWORKS", "")
# A Celery worker's own /metrics (0: none; with runplatform the web's /metrics shows it).
CUBEAI_METRICS_WORKER_PORT = envint("CUBEAI_METRICS_WORKER_PORT", "0")
CUBEAI_METRICS_WORKER_HOST = os.environ.get("CUBEAI_METRICS_WORKER_HOST", "127.0.0.1")
DATA_UPLOAD_MAX_MEMORY_SIZE = CUBEAI_MAX_JSON_BYTES
# The browser chat: chunks held for a browser that reads slower than the model writes; past
# that the reply is stopped (and its upstream request cancelled) rather than buffered.
CUBEAI_CHAT_BUFFER_CHUNKS = envint("CUBEAI_CHAT_BUFFER_CHUNKS", "256")

# Attestation of backends (inference/attestation/README.md).
CUBEAI_ATTESTATION_PERIOD_SECONDS = envint("CUBEAI_ATTESTATION_PERIOD_SECONDS", "600")
# How long a verification lets a backend route; past it the backend leaves routing even if
# re-attestation never ran. Twice the period, so one late or failed run is not an outage.
CUBEAI_ATTESTATION_VALIDITY_SECONDS = envint(
    "CUBEAI_ATTESTATION_VALIDITY_SECONDS", str(2 * CUBEAI_ATTESTATION_PERIOD_SECONDS)
)
# Clients' challenges (`POST /proxy/<domain>/attestation`): per token and per domain each
# minute; at most this many waiting behind a backend's challenge in flight in a process; one
# record stored per backend in this many seconds, its evidence only up to this size.
CUBEAI_ATTESTATION_CLIENT_TOKEN_RPM = envint("CUBEAI_ATTESTATION_CLIENT_TOKEN_RPM", "10")
CUBEAI_ATTESTATION_CLIENT_DOMAIN_RPM = envint("CUBEAI_ATTESTATION_CLIENT_DOMAIN_RPM", "60")
CUBEAI_ATTESTATION_CLIENT_QUEUE = envint("CUBEAI_ATTESTATION_CLIENT_QUEUE", "8")
CUBEAI_ATTESTATION_CLIENT_RECORD_SECONDS = envint("CUBEAI_ATTESTATION_CLIENT_RECORD_SECONDS", "60")
CUBEAI_ATTESTATION_MAX_STORED_BYTES = envint("CUBEAI_ATTESTATION_MAX_STORED_BYTES", "262144")
CUBEAI_ATTESTATION_TIMEOUT_SECONDS = float(
    os.environ.get("CUBEAI_ATTESTATION_TIMEOUT_SECONDS", "10")
)
# Operator-supplied VCEK certificates (SEV-SNP) and TDX collateral, for evidence without them.
CUBEAI_ATTESTATION_VCEK_CACHE_DIR = os.environ.get("CUBEAI_ATTESTATION_VCEK_CACHE_DIR", "")
CUBEAI_ATTESTATION_COLLATERAL_CACHE_DIR = os.environ.get(
    "CUBEAI_ATTESTATION_COLLATERAL_CACHE_DIR", ""
)
# AMD's CRLs (`<product>.crl`, `<product>-vlek.crl`, from kdsintf.amd.com), refreshed by the
# operator; checked when present, required by a policy's `require_crl`, never fetched.
CUBEAI_ATTESTATION_AMD_CRL_DIR = os.environ.get("CUBEAI_ATTESTATION_AMD_CRL_DIR", "")
# The Ed25519 seed (base64, 32 bytes) that signs credentials provisioned to agents; derived
# from the secret key when unset. Agents trust its public key (manage.py agent_provisioning_key).
CUBEAI_AGENT_PROVISIONING_KEY = envsecret("CUBEAI_AGENT_PROVISIONING_KEY")
# How long an agent still accepts its old credential after a rotation: longer than every
# replica takes to pick up the new one (CUBEAI_ROUTING_REFRESH_SECONDS).
CUBEAI_BACKEND_CREDENTIAL_GRACE_SECONDS = envint("CUBEAI_BACKEND_CREDENTIAL_GRACE_SECONDS", "300")
if CUBEAI_AGENT_PROVISIONING_KEY:
    try:
        _seed = base64.b64decode(CUBEAI_AGENT_PROVISIONING_KEY, validate=True)
    except ValueError:
        _seed = b""
    if len(_seed) != 32:
        sys.exit("CUBEAI_AGENT_PROVISIONING_KEY must be base64 of 32 random bytes.")
CELERY_BEAT_SCHEDULE["attest-backends"] = {
    "task": "inference.tasks.attest_backends",
    "schedule": CUBEAI_ATTESTATION_PERIOD_SECONDS,
}

# Background health checks of backends (Celery beat).
CUBEAI_HEALTH_PERIOD_SECONDS = envint("CUBEAI_HEALTH_PERIOD_SECONDS", "15")
CUBEAI_HEALTH_TIMEOUT_SECONDS = float(os.environ.get("CUBEAI_HEALTH_TIMEOUT_SECONDS", "3"))
CELERY_BEAT_SCHEDULE["backends-check-health"] = {
    "task": "inference.tasks.backends_check_health",
    "schedule": CUBEAI_HEALTH_PERIOD_SECONDS,
}

# Retention: a periodic job deletes what is older than this many days, in batches of
# primary keys so no table is locked for long (cubeai/lib/batches.py).
CUBEAI_RETENTION_USAGE_DAYS = envint("CUBEAI_RETENTION_USAGE_DAYS", "90")
CUBEAI_RETENTION_ATTESTATION_DAYS = envint("CUBEAI_RETENTION_ATTESTATION_DAYS", "30")
CUBEAI_RETENTION_INVITATION_DAYS = envint("CUBEAI_RETENTION_INVITATION_DAYS", "30")
CUBEAI_RETENTION_BATCH_SIZE = envint("CUBEAI_RETENTION_BATCH_SIZE", "5000")
CUBEAI_RETENTION_PERIOD_SECONDS = envint("CUBEAI_RETENTION_PERIOD_SECONDS", "3600")
if (
    min(
        CUBEAI_RETENTION_USAGE_DAYS,
        CUBEAI_RETENTION_ATTESTATION_DAYS,
        CUBEAI_RETENTION_INVITATION_DAYS,
        CUBEAI_RETENTION_BATCH_SIZE,
    )
    < 1
):
    sys.exit("CUBEAI_RETENTION_* days and the batch size must be at least 1.")
CELERY_BEAT_SCHEDULE["usage-events-purge"] = {
    "task": "inference.tasks.usage_events_purge",
    "schedule": CUBEAI_RETENTION_PERIOD_SECONDS,
}
CELERY_BEAT_SCHEDULE["attestation-records-purge"] = {
    "task": "inference.tasks.attestation_records_purge",
    "schedule": CUBEAI_RETENTION_PERIOD_SECONDS,
}
CELERY_BEAT_SCHEDULE["invitations-purge"] = {
    "task": "domains.tasks.invitations_purge",
    "schedule": CUBEAI_RETENTION_PERIOD_SECONDS,
}

# Transcription jobs (inference/jobs): time limit per run, the lease a running worker renews
# (the sweeper re-sends a job whose lease lapsed: a worker killed on the embedded broker),
# retries of backend failures with exponential back-off, and how long results are kept.
CUBEAI_TRANSCRIPTION_TIME_LIMIT_SECONDS = envint("CUBEAI_TRANSCRIPTION_TIME_LIMIT_SECONDS", "1800")
CUBEAI_TRANSCRIPTION_LEASE_SECONDS = envint("CUBEAI_TRANSCRIPTION_LEASE_SECONDS", "30")
CUBEAI_TRANSCRIPTION_QUEUED_LEASE_SECONDS = envint(
    "CUBEAI_TRANSCRIPTION_QUEUED_LEASE_SECONDS", "300"
)
CUBEAI_TRANSCRIPTION_MAX_ATTEMPTS = envint("CUBEAI_TRANSCRIPTION_MAX_ATTEMPTS", "4")
CUBEAI_TRANSCRIPTION_RETRY_BACKOFF_SECONDS = envint(
    "CUBEAI_TRANSCRIPTION_RETRY_BACKOFF_SECONDS", "10"
)
CUBEAI_TRANSCRIPTION_RETRY_BACKOFF_MAX_SECONDS = 300
CUBEAI_TRANSCRIPTION_RESULT_DAYS = envint("CUBEAI_TRANSCRIPTION_RESULT_DAYS", "7")
# Queued or running jobs one member may have in one domain (the API and the page alike).
CUBEAI_TRANSCRIPTION_MAX_ACTIVE_JOBS = envint("CUBEAI_TRANSCRIPTION_MAX_ACTIVE_JOBS", "20")
CUBEAI_TRANSCRIPTION_SWEEP_SECONDS = envint("CUBEAI_TRANSCRIPTION_SWEEP_SECONDS", "15")
# How the page's WebSocket learns of progress: group messages on the Redis channel layer
# ("layer"), or by following the job's row ("poll") where the in-process layer cannot cross
# from the worker to the web process.
CUBEAI_TRANSCRIPTION_PROGRESS = "layer" if REDIS_URL else "poll"
CUBEAI_TRANSCRIPTION_POLL_SECONDS = float(
    os.environ.get("CUBEAI_TRANSCRIPTION_POLL_SECONDS", "0.5")
)
if (
    min(
        CUBEAI_TRANSCRIPTION_TIME_LIMIT_SECONDS,
        CUBEAI_TRANSCRIPTION_LEASE_SECONDS,
        CUBEAI_TRANSCRIPTION_MAX_ATTEMPTS,
        CUBEAI_TRANSCRIPTION_RESULT_DAYS,
        CUBEAI_TRANSCRIPTION_MAX_ACTIVE_JOBS,
    )
    < 1
):
    sys.exit("CUBEAI_TRANSCRIPTION_* times, attempts, days and jobs must be at least 1.")
if REDIS_URL and CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"] <= (
    CUBEAI_TRANSCRIPTION_TIME_LIMIT_SECONDS + CUBEAI_TRANSCRIPTION_RETRY_BACKOFF_MAX_SECONDS
):
    sys.exit(
        "CUBEAI_CELERY_VISIBILITY_TIMEOUT must exceed CUBEAI_TRANSCRIPTION_TIME_LIMIT_SECONDS "
        f"+ {CUBEAI_TRANSCRIPTION_RETRY_BACKOFF_MAX_SECONDS} s (the longest retry back-off)."
    )
CELERY_BEAT_SCHEDULE["transcription-jobs-sweep"] = {
    "task": "inference.jobs.tasks.transcription_jobs_sweep",
    "schedule": CUBEAI_TRANSCRIPTION_SWEEP_SECONDS,
}
CELERY_BEAT_SCHEDULE["transcription-jobs-purge"] = {
    "task": "inference.jobs.tasks.transcription_jobs_purge",
    "schedule": CUBEAI_RETENTION_PERIOD_SECONDS,
}
