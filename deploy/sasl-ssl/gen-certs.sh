#!/bin/sh
# Makes the TLS material of the SASL_SSL compose variant (deploy/docker-compose.sasl-ssl.yml)
# at `up` time, in the container of the one-shot `certs` service, into /certs (bind-mounted
# from deploy/sasl-ssl/certs/, which git ignores): a throw-away CA (ca.pem; its key never leaves
# the directory) and one broker certificate for localhost, 127.0.0.1 and SKIFF_HOST_IP, all
# three brokers' name on the host. Nothing secret is in git. Idempotent: existing files are
# kept, so `up` after `down` serves the same CA that clients already trust.
set -eu
cd /certs
if [ -s ca.pem ] && [ -s broker.pem ] && [ -s broker.key ]; then
  echo "certs: kept the existing CA and broker certificate"
  exit 0
fi
ec="-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
# shellcheck disable=SC2086 # $ec is a list of options
openssl req -x509 $ec -days 365 -keyout ca.key -out ca.pem -subj "/CN=skiff-compose-ca" \
  -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
# shellcheck disable=SC2086
openssl req $ec -keyout broker.key -out broker.csr -subj "/CN=localhost"
san="IP:127.0.0.1,DNS:localhost"
if [ -n "${SKIFF_HOST_IP:-}" ] && [ "$SKIFF_HOST_IP" != 127.0.0.1 ]; then san="$san,IP:$SKIFF_HOST_IP"; fi
printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\n' "$san" > broker.ext
openssl x509 -req -in broker.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 365 \
  -extfile broker.ext -out broker.pem
rm -f broker.csr broker.ext ca.srl
# The brokers run as uid 10001 (deploy/Dockerfile); only they read the key.
chown 10001:10001 broker.key && chmod 0400 broker.key ca.key && chmod 0444 ca.pem broker.pem
echo "certs: made ca.pem and broker.pem ($san)"
