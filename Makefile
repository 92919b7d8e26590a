# make run   the shop on this machine: SQLite and a filesystem broker unless DATABASE_URL / CELERY_BROKER_URL
#            are set; on first start assembles the starter real-photo model (seconds, no data set needed).
# make test  ruff and the test suite on the local PostgreSQL and Redis (started when down), real Celery workers.
# make messages  after marking or changing text: the pt-BR catalog gains the new strings (translate them),
#            then its .mo is compiled; both are committed. Needs GNU gettext (apt-get install gettext).
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
ADDRPORT ?= 127.0.0.1:8000
# The browser test drives Debian's Chromium; Playwright's own browser download is never used.
CHROMIUM := /usr/bin/chromium

.PHONY: run test services messages

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Stamps: pip runs again only when a requirements file changed since the last install.
$(VENV)/.installed: requirements.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.installed-dev: requirements.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $@ $(VENV)/.installed

$(CHROMIUM):
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium

run: $(VENV)/.installed
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py bootstrap_model
	$(BIN)/python manage.py run $(ADDRPORT)

services:
	@pg_isready --quiet --host 127.0.0.1 --port 5432 \
		|| pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql) main start
	@redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 || { \
		mkdir -p /var/lib/redis /var/log/redis; \
		redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
			--dir /var/lib/redis --logfile /var/log/redis/ci.log; }
	@for attempt in $$(seq 50); do \
		pg_isready --quiet --host 127.0.0.1 --port 5432 && redis-cli -h 127.0.0.1 ping >/dev/null 2>&1 && exit 0; \
		sleep 0.2; \
	done; echo "PostgreSQL or Redis did not come up on 127.0.0.1" >&2; exit 1

test: $(VENV)/.installed-dev services $(CHROMIUM)
	$(BIN)/ruff check .
	$(BIN)/lint-imports --no-cache
	$(BIN)/pytest -q

messages: $(VENV)/.installed
	$(BIN)/python manage.py makemessages --locale pt_BR --no-obsolete --ignore .venv --ignore tests --ignore bench
	$(BIN)/python manage.py compilemessages --locale pt_BR --ignore .venv
