#!/bin/sh
# The bucket's one-shot set-up (docker-compose.yml, service minio-setup, in the minio/mc image); safe to rerun.
#   the bucket AWS_STORAGE_BUCKET_NAME; vitrine's own key AWS_ACCESS_KEY_ID, allowed this bucket only
#   (bucket-policy.json); with VITRINE_MEDIA_URLS=public, anonymous reads of the photos under media/products/
#   only (anonymous-read-photos.json: never media/originals/, never models/); with signed, none at all.
# The policy files name the bucket BUCKET; it is replaced here.
set -eu

for name in MINIO_ROOT_USER MINIO_ROOT_PASSWORD AWS_STORAGE_BUCKET_NAME AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY; do
	eval "value=\${$name:-}"
	[ -n "$value" ] || { echo "minio-setup: $name is empty; set it in .env (see .env.example)" >&2; exit 1; }
done
case "${VITRINE_MEDIA_URLS:-public}" in
	public | signed) ;;
	*) echo "minio-setup: VITRINE_MEDIA_URLS is '$VITRINE_MEDIA_URLS'; use public or signed" >&2; exit 1 ;;
esac

here="$(dirname "$0")"
bucket="$AWS_STORAGE_BUCKET_NAME"
case "$bucket" in
	*[!a-z0-9.-]* | ?? | ?) echo "minio-setup: bucket name '$bucket': 3-63 of a-z 0-9 . -" >&2; exit 1 ;;
esac
sed "s/BUCKET/$bucket/g" "$here/bucket-policy.json" >/tmp/vitrine-bucket-policy.json
sed "s/BUCKET/$bucket/g" "$here/anonymous-read-photos.json" >/tmp/vitrine-anonymous-read-photos.json

mc alias set store http://minio:9000 "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD"
mc mb --ignore-existing "store/$bucket"
mc admin policy create store vitrine-app /tmp/vitrine-bucket-policy.json
mc admin user add store "$AWS_ACCESS_KEY_ID" "$AWS_SECRET_ACCESS_KEY"
# Attached once; a rerun finds it attached already.
if ! mc admin user info store "$AWS_ACCESS_KEY_ID" | grep -q "vitrine-app"; then
	mc admin policy attach store vitrine-app --user "$AWS_ACCESS_KEY_ID"
fi
if [ "${VITRINE_MEDIA_URLS:-public}" = public ]; then
	mc anonymous set-json /tmp/vitrine-anonymous-read-photos.json "store/$bucket"
else
	mc anonymous set none "store/$bucket"
fi
echo "minio-setup: bucket $bucket ready (media URLs: ${VITRINE_MEDIA_URLS:-public})"
