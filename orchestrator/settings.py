"""Settings, read from the environment. Unset, every backing service falls back to the embedded default
(see orchestrator/embedded.py), so a fresh machine with only Python runs the whole service."""

from __future__ import annotations

import base64
import hashlib
import os
import warnings
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import environ
from django.core.exceptions import ImproperlyConfigured
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from orchestrator import embedded

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()

# The embedded default (no server URL configured) is a development setup on one machine: there DEBUG
# defaults to on. Point the service at real servers and it defaults to production: DEBUG off, SECRET_KEY
# required, secure cookies, HSTS, the SSRF guard strict.
EMBEDDED = not any(env.str(name, default="") for name in ("DATABASE_URL", "REDIS_URL", "KAFKA_BOOTSTRAP_SERVERS"))
DEBUG = env.bool("DEBUG", default=EMBEDDED)
if DEBUG:
    # Only ever signs local development sessions and tokens.
    SECRET_KEY = env.str("SECRET_KEY", default="dev-insecure-secret-key-change-me-in-production-0123456789")
else:
    try:
        SECRET_KEY = env.str("SECRET_KEY")
    except environ.ImproperlyConfigured as exc:
        raise ImproperlyConfigured("SECRET_KEY is required when DEBUG is off (docs/operations.md)") from exc
# Fernet keys (newest first) that encrypt the secrets stored in the database (orchestrator/crypto.py). The
# embedded default derives one from SECRET_KEY; production must set its own, like SECRET_KEY.
if DEBUG:
    _derived = base64.urlsafe_b64encode(hashlib.sha256(f"secrets-at-rest:{SECRET_KEY}".encode()).digest())
    SECRETS_ENCRYPTION_KEYS = env.list("SECRETS_ENCRYPTION_KEYS", default=[_derived.decode()])
else:
    try:
        SECRETS_ENCRYPTION_KEYS = env.list("SECRETS_ENCRYPTION_KEYS")
    except environ.ImproperlyConfigured as exc:
        raise ImproperlyConfigured(
            "SECRETS_ENCRYPTION_KEYS is required when DEBUG is off: one or more Fernet keys, newest first "
            "(docs/operations.md)"
        ) from exc
PORT = env.int("PORT", default=8000)
PUBLIC_BASE_URL = env.str("PUBLIC_BASE_URL", default=f"http://127.0.0.1:{PORT}").rstrip("/")
# WebSockets are served by the realtime process (daphne), HTTP by the web process (gunicorn). Behind one
# proxy (docker/nginx.conf) both share the public origin; without one (`make dev`), sockets have their port.
REALTIME_PORT = env.int("REALTIME_PORT", default=PORT + 1)
PUBLIC_WS_URL = env.str(
    "PUBLIC_WS_URL",
    default=(
        PUBLIC_BASE_URL.replace("https://", "wss://", 1).replace("http://", "ws://", 1)
        if "PUBLIC_BASE_URL" in os.environ
        else f"ws://127.0.0.1:{REALTIME_PORT}"
    ),
).rstrip("/")
# The public host, plus loopback for the container's own health check.
ALLOWED_HOSTS = env.list(
    "ALLOWED_HOSTS", default=["*"] if DEBUG else [urlsplit(PUBLIC_BASE_URL).hostname, "127.0.0.1", "localhost"]
)
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[] if DEBUG else [PUBLIC_BASE_URL])

# Behind a TLS-terminating proxy that sets X-Forwarded-Proto.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=not DEBUG)
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]  # probes speak plain HTTP inside
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=not DEBUG)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=not DEBUG)
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = not DEBUG
SECURE_CONTENT_TYPE_NOSNIFF = True

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "channels",
    "lifecycle",
    "webhooks",
    "realtime",
    "compat",
    "console",
    "axes",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "orchestrator.middleware.LogContextMiddleware",
    "lifecycle.cors.CorsMiddleware",
    "orchestrator.middleware.BodySizeLimitMiddleware",
    "orchestrator.middleware.DatabaseUnavailableMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last: it turns a locked-out login into 429 (AXES_FAILURE_LIMIT, below).
    "axes.middleware.AxesMiddleware",
]

# The console's login is rate limited (django-axes): AXES_FAILURE_LIMIT failures for one username from one
# address lock that pair out for AXES_COOLOFF_MINUTES; a success resets the count.
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(minutes=env.int("AXES_COOLOFF_MINUTES", default=15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_VERBOSE = False

ROOT_URLCONF = "orchestrator.urls"
ASGI_APPLICATION = "orchestrator.asgi.application"

# The realtime process (orchestrator/asgi.py says so): its HTTP is what holds a request open (event streams,
# Prefer: wait), served as coroutines, through middleware that is all async-capable: one sync-only
# middleware would run every request on Django's one sync thread and hold it while the request waits.
SERVES_ASGI = env.bool("ORCHESTRATOR_ASGI", default=False)
if SERVES_ASGI:
    ROOT_URLCONF = "orchestrator.urls_realtime"
    MIDDLEWARE = [
        "orchestrator.middleware.LogContextMiddleware",
        "orchestrator.middleware.BodySizeLimitMiddleware",
        "orchestrator.middleware.DatabaseUnavailableMiddleware",
    ]

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

DATABASES = {"default": env.db_url("DATABASE_URL", default=embedded.default_database_url())}
# Django's own backend, whose per-request health check asks the socket before it asks the server.
DATABASES["default"]["ENGINE"] = "orchestrator.postgresql"
# The realtime process (ASGI) runs database work on short-lived threads, where persistent per-thread
# connections leak until the server runs out of them; it uses psycopg's pool instead. The web process's
# gunicorn workers and the other processes keep persistent connections.
if env.int("DB_POOL_MAX_SIZE", default=16 if env.str("PROCESS_NAME", default="") == "realtime" else 0):
    # psycopg's connection pool, per process (Django 5.1+); replaces persistent connections.
    DATABASES["default"]["OPTIONS"] = {
        **DATABASES["default"].get("OPTIONS", {}),
        "pool": {
            "min_size": env.int("DB_POOL_MIN_SIZE", default=2),
            "max_size": env.int("DB_POOL_MAX_SIZE", default=16),
            "timeout": env.float("DB_POOL_TIMEOUT_S", default=10.0),
        },
    }
else:
    DATABASES["default"]["CONN_MAX_AGE"] = env.int("DB_CONN_MAX_AGE", default=60)
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env.str("REDIS_URL", default=embedded.default_redis_url())
KAFKA_BOOTSTRAP_SERVERS = env.str("KAFKA_BOOTSTRAP_SERVERS", default=embedded.default_kafka_bootstrap())
# Passed through to every confluent-kafka client: security.protocol, sasl.mechanism, sasl.username, ...
KAFKA_CLIENT_CONFIG = env.dict("KAFKA_CLIENT_CONFIG", default={})
KAFKA_TOPIC_PARTITIONS = env.int("KAFKA_TOPIC_PARTITIONS", default=6)
KAFKA_REPLICATION_FACTOR = env.int("KAFKA_REPLICATION_FACTOR", default=1)
# The replicas an acknowledged write must reach (topic config min.insync.replicas, set when topics are
# created): 2 with a replication factor of 3 survives one broker lost without losing a write.
KAFKA_MIN_INSYNC_REPLICAS = env.int("KAFKA_MIN_INSYNC_REPLICAS", default=1)
KAFKA_SESSION_TIMEOUT_MS = env.int("KAFKA_SESSION_TIMEOUT_MS", default=6000)
# How long a fetch may wait on the broker for data. Kafka answers as soon as data arrives, so its default
# costs no latency; the embedded broker answers late, so the embedded stack sets 20 ms (docs/embedded.md).
KAFKA_FETCH_WAIT_MAX_MS = env.int(
    "KAFKA_FETCH_WAIT_MAX_MS",
    default=embedded.EMBEDDED_FETCH_WAIT_MAX_MS if "KAFKA_BOOTSTRAP_SERVERS" not in os.environ else 500,
)
# With short fetch waits an idle consumer asks the broker 1000 / KAFKA_FETCH_WAIT_MAX_MS times a second,
# most of what an idle stack burns. So after this long with nothing consumed, a consumer stops fetching
# until the outbox's NOTIFY says a message is coming (or KAFKA_IDLE_CHECK_S passes): lifecycle.kafka.Idle.
# 0 turns it off; by default it is on only where fetch waits are short (the embedded broker).
KAFKA_IDLE_AFTER_S = env.float("KAFKA_IDLE_AFTER_S", default=2.0 if KAFKA_FETCH_WAIT_MAX_MS < 100 else 0.0)
KAFKA_IDLE_CHECK_S = env.float("KAFKA_IDLE_CHECK_S", default=1.0)

# Connections that Redis dropped (a restart) are reconnected and the command retried, with backoff for
# up to about 10 s, instead of failing the socket that happened to use them. redis-py's asyncio pools
# refuse a 101st connection outright ("Too many connections"), which failed socket handshakes during a
# connect storm: REDIS_MAX_CONNECTIONS per web process instead.
REDIS_MAX_CONNECTIONS = env.int("REDIS_MAX_CONNECTIONS", default=1000)
REDIS_RETRY = {
    "max_connections": REDIS_MAX_CONNECTIONS,
    "retry": Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=15),
    "retry_on_error": [RedisConnectionError, RedisTimeoutError],
    "health_check_interval": 15,
}
# The channel layer (realtime/layer.py): a group_send is one PUBLISH, and each realtime process fans the
# messages out in memory to its own sockets. Each socket's queue holds REALTIME_LAYER_CAPACITY messages; a
# socket that falls further behind loses only its own overflow and fills the gap from the database by seq.
REALTIME_LAYER_CAPACITY = env.int("REALTIME_LAYER_CAPACITY", default=1000)
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "realtime.layer.FanOutLayer",
        "CONFIG": {"url": REDIS_URL, "capacity": REALTIME_LAYER_CAPACITY, "publisher": REDIS_RETRY},
    }
}

CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}

CELERY_BROKER_URL = REDIS_URL
CELERY_BROKER_TRANSPORT = "orchestrator.celery:RedisTransport"
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Unless this is set, Celery's Django fixup closes the database connection before and after every task, so
# each webhook attempt opened a new PostgreSQL connection. orchestrator/celery.py instead treats each task
# as Django treats a request: connections older than CONN_MAX_AGE, or broken (a database restart), close.
CELERY_DB_REUSE_MAX = 1_000_000
CELERY_TASK_IGNORE_RESULT = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Workers and beat ride out a Redis outage of any length: they reconnect with backoff and never give up.
CELERY_BROKER_CONNECTION_MAX_RETRIES = None
CELERY_BEAT_SCHEDULER = "orchestrator.celery:Scheduler"
CELERY_WORKER_CONSUMER = "orchestrator.celery:WorkerConsumer"
# Keep Django's LOGGING (JSON lines with lifecycle context) in the workers too.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
RECONCILE_INTERVAL_S = env.float("RECONCILE_INTERVAL_S", default=10.0)
CELERY_BEAT_SCHEDULE = {
    "reconcile-stuck-lifecycles": {
        "task": "lifecycle.tasks.reconcile_stuck",
        "schedule": RECONCILE_INTERVAL_S,
    },
    "prune-timelines": {"task": "lifecycle.tasks.prune_timelines", "schedule": 3600.0},
    "prune-deliveries": {"task": "webhooks.tasks.prune_deliveries", "schedule": 3600.0},
    "end-stranded-lifecycles": {
        "task": "webhooks.tasks.end_stranded_lifecycles",
        "schedule": RECONCILE_INTERVAL_S,
    },
    "expire-callbacks": {
        "task": "lifecycle.tasks.expire_callbacks",
        "schedule": RECONCILE_INTERVAL_S,
    },
}

OPENAI_DEFAULT_BASE_URL = "https://api.openai.com/v1"
OPENAI_BASE_URL = env.str("OPENAI_BASE_URL", default=OPENAI_DEFAULT_BASE_URL).rstrip("/")
OPENAI_API_KEY = env.str("OPENAI_API_KEY", default="")
ANTHROPIC_BASE_URL = env.str("ANTHROPIC_BASE_URL", default="https://api.anthropic.com").rstrip("/")
ANTHROPIC_API_KEY = env.str("ANTHROPIC_API_KEY", default="")
# What GET /v1/models lists (those of a configured provider); any provider/model works in a request.
LISTED_MODELS = env.list(
    "LISTED_MODELS",
    default=[
        "openai/gpt-4.1",
        "openai/gpt-4.1-mini",
        "openai/gpt-4o",
        "openai/gpt-4o-mini",
        "openai/o4-mini",
        "anthropic/claude-opus-4-1",
        "anthropic/claude-sonnet-4-5",
        "anthropic/claude-haiku-4-5",
        "echo/echo",
    ],
)
# JWTs of the projects' own identity providers: clock skew allowed on exp and nbf, how long a JWKS is
# kept, how soon a token with an unknown kid may fetch it again, requests per second per user.
JWT_LEEWAY_S = env.int("JWT_LEEWAY_S", default=30)
JWT_JWKS_CACHE_S = env.int("JWT_JWKS_CACHE_S", default=600)
JWT_JWKS_MIN_REFRESH_S = env.int("JWT_JWKS_MIN_REFRESH_S", default=10)
JWT_JWKS_TIMEOUT_S = env.float("JWT_JWKS_TIMEOUT_S", default=5.0)
JWT_RATE_LIMIT_PER_USER_S = env.int("JWT_RATE_LIMIT_PER_USER_S", default=10)
# How long POST /v1/chat/completions waits for its answer (the OpenAI SDKs' own default timeout is 600 s);
# past it the answer is 504 and the lifecycle goes on.
CHAT_COMPLETIONS_TIMEOUT_S = env.float("CHAT_COMPLETIONS_TIMEOUT_S", default=600.0)

WEBHOOK_RETRY_SCHEDULE = env.list("WEBHOOK_RETRY_SCHEDULE", cast=int, default=[5, 300, 1800, 7200, 18000, 36000, 36000])
WEBHOOK_TIMEOUT_S = env.float("WEBHOOK_TIMEOUT_S", default=10.0)
# An endpoint failing without a single success for this long is disabled (the reason is kept).
WEBHOOK_DISABLE_AFTER_S = env.int("WEBHOOK_DISABLE_AFTER_S", default=5 * 24 * 3600)
# How long both the old and the new secret sign after a rotation.
WEBHOOK_SECRET_GRACE_S = env.int("WEBHOOK_SECRET_GRACE_S", default=24 * 3600)
# Attempts in flight per endpoint: a slow endpoint holds at most this many worker slots.
WEBHOOK_MAX_IN_FLIGHT_PER_ENDPOINT = env.int("WEBHOOK_MAX_IN_FLIGHT_PER_ENDPOINT", default=8)
# A claimed attempt is its worker's for WEBHOOK_TIMEOUT_S plus this long; past that (the worker stopped) the
# delivery is due again on its schedule, for any worker.
WEBHOOK_LEASE_GRACE_S = env.int("WEBHOOK_LEASE_GRACE_S", default=30)
# Attempts in flight per delivery process.
WEBHOOK_CONCURRENCY = env.int("WEBHOOK_CONCURRENCY", default=256)
# CA certificates that verify receivers' TLS (PEM file); unset, certifi's bundle.
WEBHOOK_CA_BUNDLE = env.str("WEBHOOK_CA_BUNDLE", default="") or None
# The embedded default runs everything on one machine, so it lets loopback through the SSRF guard.
WEBHOOK_ALLOWED_NETWORKS = env.list("WEBHOOK_ALLOWED_NETWORKS", default=["127.0.0.0/8", "::1/128"] if DEBUG else [])

# Generation: concurrency per generator process and how long a claimed generation may run before the
# reconciler assumes its worker died and re-drives it.
GENERATOR_CONCURRENCY = env.int("GENERATOR_CONCURRENCY", default=256)
# Requests a generator reads from Kafka beyond what it runs, to start them fairly (projects in turn, tiers
# by weight): how far back a backlog it can see past, and its memory (a small message each).
GENERATOR_LOOKAHEAD = env.int("GENERATOR_LOOKAHEAD", default=5000)
# The most of a generator's slots one project may hold: the rest stay open for other projects' requests
# to start at once (slots are coroutines waiting on the network: raise GENERATOR_CONCURRENCY to give a lone
# project more).
GENERATOR_PROJECT_SHARE = env.float("GENERATOR_PROJECT_SHARE", default=0.75)
# How often each subscriber tier goes first, relative to the others, within a project (lifecycle/scheduling.py).
GENERATION_TIER_WEIGHTS = env.list("GENERATION_TIER_WEIGHTS", default=["enterprise=8", "standard=4", "free=2"])
# How soon an operator's change to a project's cap on generations in flight reaches the generators.
GENERATOR_CAPS_REFRESH_S = env.float("GENERATOR_CAPS_REFRESH_S", default=5.0)
# Threads (each with its own database connection) that run a generator's database work.
GENERATOR_DB_THREADS = env.int("GENERATOR_DB_THREADS", default=16)
GENERATION_LEASE_S = env.int("GENERATION_LEASE_S", default=120)
PROVIDER_TIMEOUT_S = env.float("PROVIDER_TIMEOUT_S", default=60.0)
PROVIDER_MAX_RETRIES = env.int("PROVIDER_MAX_RETRIES", default=3)
# Requests and tokens per minute per provider/model, shared by every generator (lifecycle/limits.py):
# "openai/gpt-4o=rpm:500,tpm:30000;anthropic/*=rpm:50" (``provider/*``: each of its models not named).
PROVIDER_LIMITS = [entry for entry in env.str("PROVIDER_LIMITS", default="").split(";") if entry.strip()]
# Prices per million tokens, input and output, added to lifecycle/pricing.py's defaults (JSON):
# '{"openai/my-finetune": [0.3, 1.2]}'.
MODEL_PRICES = env.str("MODEL_PRICES", default="")
# The share of each configured limit left unused, so that network jitter never lands a call in the
# provider's previous minute (0.02: a limit of 600/min admits 588).
PROVIDER_LIMITS_HEADROOM = env.float("PROVIDER_LIMITS_HEADROOM", default=0.02)
# A call's answer, in tokens, when the request sets no max_tokens: what a tokens-per-minute limit charges
# before the call (settled against the usage reported after it).
GENERATION_OUTPUT_TOKENS_ESTIMATE = env.int("GENERATION_OUTPUT_TOKENS_ESTIMATE", default=256)
# A lifecycle still pending this long after its last outbox publication is re-published.
RECONCILE_AFTER_S = env.int("RECONCILE_AFTER_S", default=30)

# Timeline payloads and webhook bodies older than this are pruned to their summary (hourly sweep).
RETENTION_DAYS = env.int("RETENTION_DAYS", default=30)

# The bearer token that /metrics and /readyz's details need in production (without it, in production,
# /metrics is refused and /readyz says only ready or not); in development both are open.
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")

# Per-project API rate limit (requests per second), counted in Redis so it holds across web processes.
RATE_LIMIT_PER_S = env.int("RATE_LIMIT_PER_S", default=2000)

MAX_REQUEST_BYTES = env.int("MAX_REQUEST_BYTES", default=1024 * 1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = MAX_REQUEST_BYTES

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["lifecycle.auth.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["lifecycle.auth.IsProjectMember"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["orchestrator.parsers.StrictJSONParser"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "orchestrator.errors.exception_handler",
    "DEFAULT_THROTTLE_CLASSES": ["lifecycle.throttling.ProjectRateThrottle"],
    "UNAUTHENTICATED_USER": None,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "AI lifecycle orchestrator",
    "DESCRIPTION": "Turns each AI request into a tracked, event-driven lifecycle.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "orchestrator.openapi.add_request_rules",
        "orchestrator.openapi.add_error_responses",
    ],
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
# Served by whitenoise from the web process; in DEBUG straight from the apps, without collectstatic.
WHITENOISE_USE_FINDERS = DEBUG
if DEBUG:
    # In development files come from the apps (finders); an uncollected STATIC_ROOT is expected.
    warnings.filterwarnings("ignore", message="No directory at", category=UserWarning)
# Re-scanning static files on every request costs more than the request itself; opt in when editing them.
WHITENOISE_AUTOREFRESH = env.bool("WHITENOISE_AUTOREFRESH", default=False)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"context": {"()": "orchestrator.logs.ContextFilter"}},
    "formatters": {
        "json": {"()": "orchestrator.logs.JsonFormatter"},
        "plain": {"()": "orchestrator.logs.PlainFormatter", "format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": env.str("LOG_FORMAT", default="json"),
            "filters": ["context"],
        }
    },
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}, "httpx": {"level": "WARNING"}},
}

# Mounts bench/'s baselines (the synchronous endpoint, the naive Celery pipeline); only the benchmark sets it.
BENCH_BASELINE = env.bool("BENCH_BASELINE", default=False)
if BENCH_BASELINE:
    CELERY_IMPORTS = ("bench.baseline",)
    CELERY_TASK_ROUTES = {"bench.naive_generate": {"queue": "naive"}}

REALTIME_TOKEN_TTL_S = env.int("REALTIME_TOKEN_TTL_S", default=900)
# Streamed model output is sent to sockets at most this often (coalescing the tokens in between).
REALTIME_DELTA_INTERVAL_MS = env.int("REALTIME_DELTA_INTERVAL_MS", default=100)
REALTIME_MAX_CONNECTIONS_PER_TOKEN = env.int("REALTIME_MAX_CONNECTIONS_PER_TOKEN", default=5)
# How often a socket re-joins its group and reads what it missed (0: never). Bounds how long sockets stay
# deaf after Redis restarts and forgets the groups, at one small query per socket per period.
REALTIME_RESYNC_S = env.float("REALTIME_RESYNC_S", default=30.0)
