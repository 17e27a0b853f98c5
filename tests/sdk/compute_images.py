"""openstacksdk's compute image API driven against image-gateway as the compute endpoint.

Run by scripts/test.sh with the OpenStack venv's Python:
    python tests/sdk/compute_images.py GATEWAY_URL GLANCE_URL
The gateway must be in front of GLANCE_URL, a Glance that trusts identity headers. The script
creates its images in Glance directly, then checks what the SDK's objects hold. It prints
`sdk: N passed, M failed, K skipped`, writes the same counts as JSON to the file IG_TEST_RESULT
names (when set; scripts/test.sh adds those records up) and exits non-zero on any failure.
"""

import json
import os
import sys
import unittest
import urllib.request
import uuid

from keystoneauth1 import noauth, session
import openstack

GATEWAY, GLANCE = sys.argv[1].rstrip("/"), sys.argv[2].rstrip("/")
PROJECT = uuid.uuid4().hex
IDENTITY = {
    "X-Identity-Status": "Confirmed",
    "X-Project-Id": PROJECT,
    "X-User-Id": "sdk-tester",
    "X-Roles": "member,reader",
}



def glance(method, path, body=None, content_type="application/json"):
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    req = urllib.request.Request(GLANCE + path, data=data, method=method, headers=dict(IDENTITY))
    if data is not None:
        req.add_header("Content-Type", content_type)
    with urllib.request.urlopen(req) as res:
        text = res.read()
        return json.loads(text) if text else None


def connection():
    sess = session.Session(auth=noauth.NoAuth(), additional_headers=IDENTITY)
    return openstack.connection.Connection(
        session=sess, compute_endpoint_override=GATEWAY + "/v2.1", compute_api_version="2.1"
    )


class ComputeImages(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.conn = connection()
        cls.active = glance("POST", "/v2/images", {
            "name": "sdk-active", "disk_format": "raw", "container_format": "bare",
            "min_ram": 256, "min_disk": 2, "os_distro": "cirros", "architecture": "x86_64",
        })
        glance("PUT", "/v2/images/%s/file" % cls.active["id"], b"z" * 4096, "application/octet-stream")
        cls.queued = glance("POST", "/v2/images", {"name": "sdk-queued"})

    def test_list_details(self):
        images = {i.id: i for i in self.conn.compute.images()}
        self.assertIn(self.active["id"], images)
        active = images[self.active["id"]]
        self.assertEqual(active.name, "sdk-active")
        self.assertEqual(active.status, "ACTIVE")
        self.assertEqual(active.progress, 100)
        self.assertEqual(active.size, 4096)
        self.assertEqual(active.min_ram, 256)
        self.assertEqual(active.min_disk, 2)
        self.assertEqual(active.metadata, {"os_distro": "cirros", "architecture": "x86_64"})
        self.assertEqual(images[self.queued["id"]].status, "SAVING")

    def test_list_basic_and_filters(self):
        names = {i.name for i in self.conn.compute.images(details=False)}
        self.assertTrue({"sdk-active", "sdk-queued"} <= names)
        only = list(self.conn.compute.images(name="sdk-active"))
        self.assertEqual([i.id for i in only], [self.active["id"]])
        self.assertEqual([i.id for i in self.conn.compute.images(status="SAVING")], [])

    def test_pagination_is_followed(self):
        ids = [i.id for i in self.conn.compute.images(limit=1, paginated=True)]
        self.assertEqual(sorted(ids), sorted(i.id for i in self.conn.compute.images()))

    def test_get_image(self):
        image = self.conn.compute.get_image(self.active["id"])
        self.assertEqual(image.id, self.active["id"])
        self.assertEqual(image.created_at, self.active["created_at"])
        self.assertEqual([l["rel"] for l in image.links], ["self", "bookmark", "alternate"])
        self.assertTrue(image.links[0]["href"].startswith(GATEWAY + "/v2.1/images/"))
        with self.assertRaises(openstack.exceptions.NotFoundException):
            self.conn.compute.get_image(str(uuid.uuid4()))

    def test_metadata_round_trip(self):
        image = glance("POST", "/v2/images", {"name": "sdk-meta", "os_version": "1"})
        got = self.conn.compute.get_image_metadata(image["id"])
        self.assertEqual(got.metadata, {"os_version": "1"})
        got = self.conn.compute.set_image_metadata(image["id"], os_version="2", purpose="test")
        self.assertEqual(got.metadata, {"os_version": "2", "purpose": "test"})
        self.conn.compute.delete_image_metadata(image["id"], ["purpose"])
        after = glance("GET", "/v2/images/%s" % image["id"])
        self.assertEqual(after["os_version"], "2")
        self.assertNotIn("purpose", after)

    def test_delete_image(self):
        image = glance("POST", "/v2/images", {"name": "sdk-doomed"})
        self.conn.compute.delete_image(image["id"])
        with self.assertRaises(openstack.exceptions.NotFoundException):
            self.conn.compute.get_image(image["id"])
        with self.assertRaises(openstack.exceptions.NotFoundException):
            self.conn.compute.delete_image(image["id"], ignore_missing=False)


if __name__ == "__main__":
    result = unittest.main(argv=[sys.argv[0], "-v"], exit=False, warnings="ignore").result
    failed = len(result.failures) + len(result.errors)
    skipped = len(result.skipped)
    passed = result.testsRun - failed - skipped
    print("sdk: %d passed, %d failed, %d skipped" % (passed, failed, skipped))
    if os.environ.get("IG_TEST_RESULT"):
        with open(os.environ["IG_TEST_RESULT"], "w") as f:
            json.dump({"passed": passed, "failed": failed, "skipped": skipped}, f)
    sys.exit(1 if failed or not result.wasSuccessful() else 0)
