#!/usr/bin/env bash
# The findings store of the Cloud Run service: a database and a user on a
# Cloud SQL for PostgreSQL instance (13 or later), and the connection string
# in Secret Manager, where service.yaml reads it into DATABASE_URL. The
# service reaches the instance through the Cloud SQL connector's unix socket
# (service.yaml's run.googleapis.com/cloudsql-instances annotation), so the
# string names a socket directory, not a host and port. Run before
# `gcloud run services replace service.yaml`.
#
# Placeholders, given as environment variables:
#   PROJECT   project of the Cloud Run service and the instance
#   REGION    region of the instance
#   INSTANCE  the Cloud SQL instance (created beforehand, e.g.
#             gcloud sql instances create INSTANCE --database-version=POSTGRES_16 \
#               --region=REGION --tier=db-custom-1-3840)
#
# The schema is created by the service itself at its first start (the first
# instance up migrates under an advisory lock; the others wait).
set -euo pipefail

PROJECT="${PROJECT:?set PROJECT (placeholder: your Google Cloud project)}"
REGION="${REGION:?set REGION (placeholder: the Cloud SQL region, e.g. us-central1)}"
INSTANCE="${INSTANCE:?set INSTANCE (placeholder: the Cloud SQL instance name)}"
INSTANCE_CONNECTION_NAME="${PROJECT}:${REGION}:${INSTANCE}"
DATABASE=image_auditor
DB_USER=image-auditor
SECRET=image-auditor-database-url
RUNTIME_SA="image-auditor@${PROJECT}.iam.gserviceaccount.com"

# 1. The database and its user; the password is only ever in the secret.
gcloud sql databases describe "$DATABASE" --instance "$INSTANCE" --project "$PROJECT" >/dev/null 2>&1 ||
  gcloud sql databases create "$DATABASE" --instance "$INSTANCE" --project "$PROJECT"
PASSWORD=$(openssl rand -hex 24)
gcloud sql users create "$DB_USER" --instance "$INSTANCE" --project "$PROJECT" \
  --password "$PASSWORD" 2>/dev/null ||
  gcloud sql users set-password "$DB_USER" --instance "$INSTANCE" --project "$PROJECT" \
    --password "$PASSWORD"

# 2. The connection string, in PostgreSQL's key=value form: host is the
# connector's socket directory inside the container.
URL="host=/cloudsql/${INSTANCE_CONNECTION_NAME} dbname=${DATABASE} user=${DB_USER} password=${PASSWORD}"
if gcloud secrets describe "$SECRET" --project "$PROJECT" >/dev/null 2>&1; then
  printf '%s' "$URL" | gcloud secrets versions add "$SECRET" --project "$PROJECT" --data-file=-
else
  printf '%s' "$URL" | gcloud secrets create "$SECRET" --project "$PROJECT" --data-file=-
fi

# 3. The service's identity may read the secret and connect to the instance.
gcloud secrets add-iam-policy-binding "$SECRET" --project "$PROJECT" \
  --member "serviceAccount:${RUNTIME_SA}" --role roles/secretmanager.secretAccessor
gcloud projects add-iam-policy-binding "$PROJECT" \
  --member "serviceAccount:${RUNTIME_SA}" --role roles/cloudsql.client

echo "run.googleapis.com/cloudsql-instances: ${INSTANCE_CONNECTION_NAME}"
