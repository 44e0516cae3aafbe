#!/usr/bin/env bash
# Debian packages the test suite drives for real: Chromium (browser tests), PostgreSQL (multi-site
# study database), Tesseract (the curation's offline OCR pre-screen) and OpenSSL (a self-signed certificate).
# Installs only what is missing; needs root or sudo.
set -euo pipefail
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
# the curation's OCR runs in process (tesserocr, requirements.txt); Debian's package gives its English model
ls /usr/share/tesseract-ocr/*/tessdata/eng.traineddata >/dev/null 2>&1 || need+=(tesseract-ocr tesseract-ocr-eng)
command -v openssl >/dev/null 2>&1 || need+=(openssl)  # the rater station's HTTPS test makes its own certificate
[ ${#need[@]} -eq 0 ] && exit 0
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "Installing Debian packages: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
