#!/usr/bin/env bash
# Delivers a registry project's `gcr` notifications (Artifact Registry and
# Container Registry publish to the topic `gcr`) to the Cloud Run service by
# Pub/Sub push, authenticated with an OIDC token of a dedicated invoker
# service account. Run after `gcloud run services replace service.yaml`.
#
# Placeholders, given as environment variables:
#   PROJECT           project of the Cloud Run service and the subscription
#   REGION            region of the Cloud Run service
#   REGISTRY_PROJECT  project whose registry is audited (default: PROJECT)
#
# The service must then verify the tokens: config.yaml (the Secret Manager
# copy of deploy/cloudrun/config.yaml) needs
#
#   pubsub:
#     push:
#       enabled: true
#       auth:
#         audience: https://SERVICE_URL              # = --push-auth-token-audience
#         service_account_emails:
#           - push-invoker@project-id.iam.gserviceaccount.com   # = --push-auth-service-account
#
# with SERVICE_URL and project-id replaced by the values printed below.
set -euo pipefail

PROJECT="${PROJECT:?set PROJECT (placeholder: your Google Cloud project)}"
REGION="${REGION:?set REGION (placeholder: the Cloud Run region, e.g. us-central1)}"
REGISTRY_PROJECT="${REGISTRY_PROJECT:-$PROJECT}"
SERVICE=image-auditor
SUBSCRIPTION=image-auditor-push
INVOKER="push-invoker@${PROJECT}.iam.gserviceaccount.com"

SERVICE_URL=$(gcloud run services describe "$SERVICE" --project "$PROJECT" \
  --region "$REGION" --format 'value(status.url)')
# Cloud Run checks that the token's audience is the service URL; the
# service checks it against pubsub.push.auth.audience.
AUDIENCE="$SERVICE_URL"
PROJECT_NUMBER=$(gcloud projects describe "$PROJECT" --format 'value(projectNumber)')

# 1. The invoker identity Pub/Sub signs push tokens as.
gcloud iam service-accounts describe "$INVOKER" --project "$PROJECT" >/dev/null 2>&1 ||
  gcloud iam service-accounts create push-invoker --project "$PROJECT" \
    --display-name "Pub/Sub push to image-auditor"

# 2. Only the invoker may call the service (no allUsers binding).
gcloud run services add-iam-policy-binding "$SERVICE" --project "$PROJECT" \
  --region "$REGION" \
  --member "serviceAccount:${INVOKER}" --role roles/run.invoker

# 3. Pub/Sub's service agent mints the OIDC tokens for the invoker.
gcloud iam service-accounts add-iam-policy-binding "$INVOKER" --project "$PROJECT" \
  --member "serviceAccount:service-${PROJECT_NUMBER}@gcp-sa-pubsub.iam.gserviceaccount.com" \
  --role roles/iam.serviceAccountTokenCreator

# 4. The push subscription on the registry project's `gcr` topic. The ack
# deadline exceeds the service's request timeout (30s); undecided events are
# answered 503 and redelivered with backoff until undecided_retry_for (1h).
gcloud pubsub subscriptions create "$SUBSCRIPTION" --project "$PROJECT" \
  --topic "projects/${REGISTRY_PROJECT}/topics/gcr" \
  --push-endpoint="${SERVICE_URL}/pubsub/push" \
  --push-auth-service-account="$INVOKER" \
  --push-auth-token-audience="$AUDIENCE" \
  --ack-deadline=60 \
  --min-retry-delay=10s --max-retry-delay=600s \
  --message-retention-duration=7d \
  --expiration-period=never

echo "pubsub.push.auth.audience: ${AUDIENCE}"
echo "pubsub.push.auth.service_account_emails: [${INVOKER}]"
