# One image for every Fleetline process: migrate, auth, dispatch, console, gateway and the agent.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY services ./services
COPY gateway ./gateway
COPY agent ./agent
COPY fleetline ./fleetline
COPY migrations ./migrations
RUN pip install --no-cache-dir . \
 && useradd --system --uid 10001 --home-dir /var/lib/fleetline fleetline \
 && mkdir -p /var/lib/fleetline /enroll && chown fleetline /var/lib/fleetline /enroll
USER fleetline
EXPOSE 8000 8443
