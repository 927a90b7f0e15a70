# One schema per version: a new installation of the current version
# (rate_limiter--1.6.sql, built from sql/schema) and an installation of any
# older version updated with ALTER EXTENSION rate_limiter UPDATE end in the
# same catalog, and an update keeps the privileges a site granted.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('schema_versions');
$node->init;
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'rate_limiter'");
$node->start;

my $current = $node->safe_psql('postgres',
	"SELECT default_version FROM pg_available_extensions WHERE name = 'rate_limiter'");
is($current, '1.6', 'the current version is 1.6');

# Everything of the extension that a schema defines, one line per fact,
# sorted: its members, function definitions and privileges, columns (in
# order), constraints, indexes, triggers, views, sequences, comments,
# initial privileges and configuration tables.  ACLs are compared as sets
# (aclexplode), NULL as the default ACL it stands for.
my $catalog = <<'SQL';
WITH ext AS (SELECT oid, extnamespace FROM pg_extension WHERE extname = 'rate_limiter'),
members AS (
  SELECT d.classid, d.objid, d.objsubid FROM pg_depend d, ext
   WHERE d.refclassid = 'pg_extension'::regclass AND d.refobjid = ext.oid AND d.deptype = 'e'),
funcs AS (SELECT p.oid FROM pg_proc p JOIN members m ON m.classid = 'pg_proc'::regclass AND m.objid = p.oid),
rels AS (SELECT c.oid FROM pg_class c JOIN members m ON m.classid = 'pg_class'::regclass AND m.objid = c.oid),
lines AS (
  SELECT 'member ' || pg_describe_object(classid, objid, objsubid) AS l FROM members
  UNION ALL
  SELECT 'function ' || pg_get_functiondef(f.oid) FROM funcs f
  UNION ALL
  SELECT format('acl %s %s %s %s', p.oid::regprocedure, coalesce(r.rolname, 'PUBLIC'), a.privilege_type, a.is_grantable)
    FROM pg_proc p JOIN funcs f ON f.oid = p.oid,
         aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a LEFT JOIN pg_roles r ON r.oid = a.grantee
  UNION ALL
  SELECT format('acl %s %s %s %s', c.oid::regclass, coalesce(r.rolname, 'PUBLIC'), a.privilege_type, a.is_grantable)
    FROM pg_class c JOIN rels x ON x.oid = c.oid,
         aclexplode(coalesce(c.relacl, acldefault((CASE WHEN c.relkind = 'S' THEN 's' ELSE 'r' END)::"char", c.relowner))) a
         LEFT JOIN pg_roles r ON r.oid = a.grantee
  UNION ALL
  SELECT format('column %s.%s %s default=%s notnull=%s', a.attrelid::regclass, a.attname,
                format_type(a.atttypid, a.atttypmod), pg_get_expr(ad.adbin, ad.adrelid), a.attnotnull)
    FROM pg_attribute a JOIN rels x ON x.oid = a.attrelid
         LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
   WHERE a.attnum > 0 AND NOT a.attisdropped
  UNION ALL
  SELECT format('column-order %s %s', c.oid::regclass,
                (SELECT string_agg(a.attname, ',' ORDER BY a.attnum) FROM pg_attribute a
                  WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped))
    FROM pg_class c JOIN rels x ON x.oid = c.oid
  UNION ALL
  SELECT 'index ' || pg_get_indexdef(i.indexrelid) FROM pg_index i JOIN rels x ON x.oid = i.indrelid
  UNION ALL
  SELECT format('constraint %s %s %s', co.conrelid::regclass, co.conname, pg_get_constraintdef(co.oid))
    FROM pg_constraint co JOIN rels x ON x.oid = co.conrelid
  UNION ALL
  SELECT format('trigger %s %s', pg_get_triggerdef(t.oid), t.tgenabled)
    FROM pg_trigger t JOIN rels x ON x.oid = t.tgrelid WHERE NOT t.tgisinternal
  UNION ALL
  SELECT format('view %s %s', c.oid::regclass, pg_get_viewdef(c.oid)) FROM pg_class c JOIN rels x ON x.oid = c.oid
   WHERE c.relkind = 'v'
  UNION ALL
  SELECT format('sequence %s cache=%s', s.seqrelid::regclass, s.seqcache) FROM pg_sequence s JOIN rels x ON x.oid = s.seqrelid
  UNION ALL
  SELECT format('comment %s: %s', pg_describe_object(d.classoid, d.objoid, d.objsubid), d.description)
    FROM pg_description d
   WHERE (d.classoid = 'pg_proc'::regclass AND d.objoid IN (SELECT oid FROM funcs))
      OR (d.classoid = 'pg_class'::regclass AND d.objoid IN (SELECT oid FROM rels))
  UNION ALL
  SELECT format('initpriv %s %s %s', pg_describe_object(i.classoid, i.objoid, i.objsubid), i.privtype,
                (SELECT string_agg(e, ',' ORDER BY e COLLATE "C")
                   FROM (SELECT format('%s=%s/%s%s', x.grantee::regrole, x.privilege_type, x.grantor::regrole,
                                       CASE WHEN x.is_grantable THEN '*' END) AS e
                           FROM aclexplode(i.initprivs) x) y))
    FROM pg_init_privs i
   WHERE (i.classoid = 'pg_proc'::regclass AND i.objoid IN (SELECT oid FROM funcs))
      OR (i.classoid = 'pg_class'::regclass AND i.objoid IN (SELECT oid FROM rels))
  UNION ALL
  SELECT format('config_dump %s %s', c::regclass, cond)
    FROM pg_extension e, unnest(e.extconfig, e.extcondition) AS u(c, cond) WHERE e.extname = 'rate_limiter'
)
SELECT l FROM lines ORDER BY l COLLATE "C";
SQL

$node->safe_psql('postgres', 'CREATE DATABASE fresh');
$node->safe_psql('fresh', 'CREATE EXTENSION rate_limiter');
is($node->safe_psql('fresh', "SELECT extversion FROM pg_extension WHERE extname = 'rate_limiter'"),
	$current, 'CREATE EXTENSION installs the current version');
my $want = $node->safe_psql('fresh', $catalog);
cmp_ok(scalar(split /\n/, $want), '>', 1000, 'the catalog description is not empty');

# The per-limit options of sql/schema/options.tsv are the option columns of
# both rule tables and the last arguments of every set_* function, with
# their types and defaults, in order; scripts/check_options.py checks the
# C++ list, the upsert, the update scripts, the settings and the docs.
command_ok([ 'python3', 'scripts/check_options.py' ], 'the option list agrees with the sources and docs');
my %sql_type = (float8 => 'double precision', timestamptz => 'timestamp with time zone');
my @options;
open(my $tsv, '<', 'sql/schema/options.tsv') or die "sql/schema/options.tsv: $!";
while (my $line = <$tsv>)
{
	chomp $line;
	next if $line =~ /^(#|\s*$)/;
	my ($name, $type, $default, $not_null) = split /\t/, $line;
	$type = $sql_type{$type} // $type;
	push @options, { name => $name, type => $type, default => $default, not_null => $not_null };
}
close $tsv;
cmp_ok(scalar(@options), '>=', 16, 'options.tsv lists the options');
foreach my $table ('token_limits', 'request_limits')
{
	my $want = join("\n", map {
		join('|', $_->{name}, $_->{type}, $_->{not_null} eq 'yes' ? 't' : 'f',
			$_->{default} eq 'NULL' ? '' : "$_->{default}::$_->{type}")
	} @options);
	is($node->safe_psql('fresh', qq{
		SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, pg_get_expr(d.adbin, d.adrelid)
		  FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
		 WHERE a.attrelid = '$table'::regclass AND a.attnum > (SELECT attnum FROM pg_attribute
		        WHERE attrelid = '$table'::regclass AND attname = 'updated_at')
		   AND NOT a.attisdropped ORDER BY a.attnum}), $want, "$table: the option columns");
}
my $want_args = join(', ', map {
	"$_->{name} $_->{type} DEFAULT " . ($_->{default} eq 'NULL' ? "NULL::$_->{type}" : "$_->{default}::$_->{type}")
} @options);
foreach my $f ('set_rate_limit', 'set_user_rate_limit', 'set_api_rate_limit', 'set_api_token_limit',
	'set_default_rate_limit', 'set_default_user_rate_limit')
{
	my $args = $node->safe_psql('fresh', "SELECT pg_get_function_arguments('$f'::regproc)");
	ok(substr($args, -length($want_args)) eq $want_args, "$f: the option arguments, last and in order")
	  or diag("$f($args)");
	is($node->safe_psql('fresh', qq{
		SELECT array_to_string(p.proargnames[p.pronargs - ${\ scalar(@options)} + 1 : p.pronargs], ',')
		  FROM pg_proc p WHERE p.oid = '$f'::regproc}), join(',', map { $_->{name} } @options),
		"$f: proargnames end with the options");
}

foreach my $from ('1.0', '1.1', '1.2', '1.3', '1.4', '1.5')
{
	(my $db = "from_$from") =~ s/\./_/;
	$node->safe_psql('postgres', "CREATE DATABASE $db");
	$node->safe_psql($db, "CREATE EXTENSION rate_limiter VERSION '$from'");
	is($node->safe_psql($db, "SELECT extversion FROM pg_extension WHERE extname = 'rate_limiter'"),
		$from, "$from installed");
	$node->safe_psql($db, 'ALTER EXTENSION rate_limiter UPDATE');
	is($node->safe_psql($db, "SELECT extversion FROM pg_extension WHERE extname = 'rate_limiter'"),
		$current, "$from updated to $current");
	my $got = $node->safe_psql($db, $catalog);
	ok($got eq $want, "$from updated to $current has the catalog of a new $current installation")
	  or diag(join("\n", 'differences (- new installation, + updated):', diff_lines($want, $got)));
}

# Grants survive the update from 1.0, where every function below is
# dropped and created again with other arguments or result columns.
$node->safe_psql('postgres', 'CREATE ROLE limit_admin');
$node->safe_psql('postgres', 'CREATE ROLE app');
$node->safe_psql('postgres', 'CREATE DATABASE granted');
$node->safe_psql('granted', q{
	CREATE EXTENSION rate_limiter VERSION '1.0';
	GRANT EXECUTE ON FUNCTION set_user_rate_limit(text, bigint, interval, text) TO limit_admin;
	GRANT EXECUTE ON FUNCTION set_default_rate_limit(bigint, interval) TO limit_admin WITH GRANT OPTION;
	GRANT EXECUTE ON FUNCTION get_rate_limit_status(text) TO limit_admin;
	REVOKE EXECUTE ON FUNCTION allocate_tokens(text, bigint, text, text, text, jsonb) FROM PUBLIC;
	GRANT EXECUTE ON FUNCTION allocate_tokens(text, bigint, text, text, text, jsonb) TO app;
});
$node->safe_psql('granted', 'ALTER EXTENSION rate_limiter UPDATE');
my $may = sub {
	my ($role, $function, $privilege) = @_;
	return $node->safe_psql('granted', qq{
		SELECT has_function_privilege('$role', p.oid, '$privilege')
		  FROM pg_proc p WHERE p.proname = '$function'});
};
is($may->('limit_admin', 'set_user_rate_limit', 'EXECUTE'), 't',
	'EXECUTE on set_user_rate_limit survives the update');
is($may->('limit_admin', 'set_default_rate_limit', 'EXECUTE WITH GRANT OPTION'), 't',
	'EXECUTE WITH GRANT OPTION on set_default_rate_limit survives the update');
is($may->('limit_admin', 'get_rate_limit_status', 'EXECUTE'), 't',
	'EXECUTE on get_rate_limit_status survives the update');
is($may->('app', 'allocate_tokens', 'EXECUTE'), 't', 'a grant on allocate_tokens survives the update');
is($may->('limit_admin', 'allocate_tokens', 'EXECUTE'), 'f',
	'a REVOKE FROM PUBLIC on allocate_tokens survives the update');
is($may->('limit_admin', 'set_rate_limit', 'EXECUTE'), 'f', 'no privilege appears that was not granted');
is($node->safe_psql('granted', q{
	SELECT count(*) FROM pg_class WHERE relname = 'rate_limiter_saved_acl'}), '0',
	'the update leaves no table behind');
$node->safe_psql('granted', q{SET ROLE limit_admin; SELECT set_user_rate_limit('u', 5, '1 minute', algorithm => 'gcra')});
is($node->safe_psql('granted', q{SELECT max_requests_per_window || ' ' || algorithm FROM request_limits WHERE user_id = 'u'}),
	'5 gcra', 'the granted role can set a request limit after the update');

# They are the site's grants, not the extension's: pg_dump still dumps them.
command_ok([ 'pg_dump', '-d', $node->connstr('granted'), '-f', $node->basedir . '/granted.sql' ],
	'pg_dump succeeds');
my $dump = slurp_file($node->basedir . '/granted.sql');
like($dump, qr/GRANT ALL ON FUNCTION public\.set_user_rate_limit\(.*\) TO limit_admin;/,
	'the dump carries the grant on set_user_rate_limit');
like($dump, qr/REVOKE ALL ON FUNCTION public\.allocate_tokens\(.*\) FROM PUBLIC;/,
	'the dump carries the REVOKE on allocate_tokens');

# The library assumes its own schema: the functions of a database still at
# an older version raise a clear error (not a crash, not a wrong answer)
# until ALTER EXTENSION rate_limiter UPDATE.
$node->safe_psql('postgres', 'CREATE DATABASE old');
$node->safe_psql('old', q{
	CREATE EXTENSION rate_limiter VERSION '1.0';
	ALTER TABLE token_limits DISABLE TRIGGER ALL;
	INSERT INTO token_limits (user_id, max_tokens_per_period) VALUES ('a', 10);
});
foreach my $call (q{SELECT * FROM allocate_tokens('a', 5)}, q{SELECT * FROM check_rate_limit('a')},
	q{SELECT * FROM get_rate_limit_status('a')}, q{SELECT reset_rate_limit('a')})
{
	my ($rc, $out, $err) = $node->psql('old', "\\set VERBOSITY verbose\n$call");
	like($err, qr/ERROR:  55000: extension "rate_limiter" in this database is at version 1\.0, but the library is version $current/,
		"1.0: $call raises 55000");
	like($err, qr/HINT:  Run ALTER EXTENSION rate_limiter UPDATE;/, "1.0: $call hints at the update");
}
$node->safe_psql('old', 'ALTER EXTENSION rate_limiter UPDATE; ALTER TABLE token_limits ENABLE ALWAYS TRIGGER rate_limiter_rules_changed; SELECT reload_rate_limits()');
is($node->safe_psql('old', q{SELECT tokens_allocated FROM allocate_tokens('a', 5, 'high')}), '5',
	'after the update the same call works, under the rule of the old installation');

$node->stop;
done_testing();

# The lines only in $a (-) and only in $b (+).
sub diff_lines
{
	my ($a, $b) = @_;
	my (%in_a, %in_b);
	$in_a{$_}++ foreach split /\n/, $a;
	$in_b{$_}++ foreach split /\n/, $b;
	return ((map { "- $_" } grep { !$in_b{$_} } sort keys %in_a),
		(map { "+ $_" } grep { !$in_a{$_} } sort keys %in_b));
}
