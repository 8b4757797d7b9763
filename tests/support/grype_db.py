#!/usr/bin/python3
"""Write a small Grype v6 vulnerability database (SQLite) for `grype db import`.

usage: grype_db.py OUT.db

The tables and columns are those of grype's schema 6.1.9 (schema/grype/db/sql in
anchore/grype); grype's import "hydrates" the file (GORM's AutoMigrate adds the tables and
indexes not written here). The advisories are the made-up ones of tests/fixtures/trivy-db
(CVE-2099-1001/1002 in Alpine 3.19's zlib), so both scanners find the same things.
"""
import datetime
import json
import sqlite3
import sys

SCHEMA = """
CREATE TABLE `db_metadata` (`build_timestamp` datetime NOT NULL,`model` integer NOT NULL,`revision` integer NOT NULL,`addition` integer NOT NULL);
CREATE TABLE `providers` (`id` text,`version` text,`processor` text,`date_captured` datetime,`input_digest` text,PRIMARY KEY (`id`));
CREATE TABLE `blobs` (`id` integer PRIMARY KEY AUTOINCREMENT,`value` text NOT NULL);
CREATE TABLE `vulnerability_handles` (`id` integer PRIMARY KEY AUTOINCREMENT,`name` text NOT NULL,`status` text NOT NULL,`published_date` datetime,`modified_date` datetime,`withdrawn_date` datetime,`provider_id` text NOT NULL,`blob_id` integer,CONSTRAINT `fk_vulnerability_handles_provider` FOREIGN KEY (`provider_id`) REFERENCES `providers`(`id`));
CREATE TABLE `operating_systems` (`id` integer PRIMARY KEY AUTOINCREMENT,`name` text,`release_id` text,`major_version` text,`minor_version` text,`label_version` text,`codename` text,`channel` text,`eol_date` datetime,`eoas_date` datetime);
CREATE TABLE `packages` (`id` integer PRIMARY KEY AUTOINCREMENT,`ecosystem` text,`name` text);
CREATE TABLE `affected_package_handles` (`id` integer PRIMARY KEY AUTOINCREMENT,`vulnerability_id` integer NOT NULL,`operating_system_id` integer,`package_id` integer,`blob_id` integer,CONSTRAINT `fk_affected_package_handles_operating_system` FOREIGN KEY (`operating_system_id`) REFERENCES `operating_systems`(`id`),CONSTRAINT `fk_affected_package_handles_package` FOREIGN KEY (`package_id`) REFERENCES `packages`(`id`),CONSTRAINT `fk_affected_package_handles_vulnerability` FOREIGN KEY (`vulnerability_id`) REFERENCES `vulnerability_handles`(`id`));
"""

ADVISORIES = [
    ("CVE-2099-1001", "zlib", "1.3.1-r1", "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:H",
     "A made-up heap overflow in zlib's inflate, written for the myrmex test suite."),
    ("CVE-2099-1002", "zlib", "1.3.1-r2", "CVSS:3.1/AV:L/AC:H/PR:L/UI:N/S:U/C:L/I:N/A:N",
     "A made-up zlib flaw, written for the myrmex test suite."),
]


def main(out):
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S.000000+00:00")
    db = sqlite3.connect(out)
    db.executescript(SCHEMA)
    db.execute("INSERT INTO db_metadata VALUES (?, 6, 1, 9)", (now,))
    db.execute("INSERT INTO providers VALUES ('alpine', '1', 'myrmex-test', ?, 'xxh64:0000000000000000')", (now,))
    db.execute("INSERT INTO operating_systems (name, release_id, major_version, minor_version, label_version, codename, channel)"
               " VALUES ('alpine', 'alpine', '3', '19', '', '', '')")
    db.execute("INSERT INTO packages (ecosystem, name) VALUES ('apk', 'zlib')")
    for vid, pkg, fixed, vector, desc in ADVISORIES:
        vblob = {"id": vid, "assigner": ["test@myrmex.invalid"], "description": desc,
                 "refs": [{"url": "https://example.invalid/advisories/" + vid}],
                 "severities": [{"scheme": "CVSS", "value": {"vector": vector, "version": "3.1"},
                                 "source": "nvd@nist.gov", "rank": 1}]}
        cur = db.execute("INSERT INTO blobs (value) VALUES (?)", (json.dumps(vblob),))
        vh = db.execute("INSERT INTO vulnerability_handles (name, status, published_date, modified_date, provider_id, blob_id)"
                        " VALUES (?, 'active', ?, ?, 'alpine', ?)", (vid, now, now, cur.lastrowid)).lastrowid
        pblob = {"ranges": [{"version": {"type": "apk", "constraint": "< " + fixed},
                             "fix": {"version": fixed, "state": "fixed"}}]}
        cur = db.execute("INSERT INTO blobs (value) VALUES (?)", (json.dumps(pblob),))
        db.execute("INSERT INTO affected_package_handles (vulnerability_id, operating_system_id, package_id, blob_id)"
                   " VALUES (?, 1, 1, ?)", (vh, cur.lastrowid))
    db.commit()
    db.close()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        sys.exit(2)
    main(sys.argv[1])
