using System.Reflection;
using NetArchTest.Rules;

namespace ModularChat.Architecture.Tests;

/// <summary>
/// Modules talk only through each other's Contracts: a module's implementation never depends on
/// another module's implementation, and Contracts and BuildingBlocks depend on no module at all.
/// </summary>
public sealed class ModuleBoundaryTests
{
    private static readonly Assembly[] Assemblies = LoadModularChatAssemblies();

    /// <summary>Module implementation assemblies: every ModularChat.* that is not shared, a contract, the host or a test.</summary>
    private static readonly Assembly[] Modules = Assemblies.Where(a => IsModule(a.GetName().Name!)).ToArray();

    public static TheoryData<string> ModuleNames => new(Modules.Select(m => m.GetName().Name!));

    /// <summary>The modules, each with its Contracts.</summary>
    private static readonly string[] ExpectedModules = ["ModularChat.Conversations", "ModularChat.Providers", "ModularChat.Search", "ModularChat.Summaries"];

    /// <summary>What depends on no module implementation: each module's Contracts and the BuildingBlocks (ordinal order).</summary>
    private static readonly string[] SharedAssemblies = [.. ExpectedModules.Select(m => m + ".Contracts").Append("ModularChat.BuildingBlocks").Order(StringComparer.Ordinal)];

    [Fact]
    public void The_modules_are_found()
        => Assert.Equal(ExpectedModules, Modules.Select(m => m.GetName().Name!).Order(StringComparer.Ordinal));

    [Theory]
    [MemberData(nameof(ModuleNames))]
    public void A_module_does_not_depend_on_another_modules_implementation(string module)
    {
        var others = Modules.Select(m => m.GetName().Name!).Where(n => n != module).ToArray();
        Assert.Empty(Violations(Assemblies.Single(a => a.GetName().Name == module), others));
    }

    [Fact]
    public void Contracts_and_building_blocks_depend_on_no_module_implementation()
    {
        var modules = Modules.Select(m => m.GetName().Name!).ToArray();
        var checkedAssemblies = Assemblies.Where(a => a.GetName().Name!.EndsWith(".Contracts", StringComparison.Ordinal) || a.GetName().Name == "ModularChat.BuildingBlocks").ToList();
        // Every module's Contracts and the BuildingBlocks are checked (a loop over none would pass), against types there are.
        Assert.Equal(SharedAssemblies, checkedAssemblies.Select(a => a.GetName().Name!).Order(StringComparer.Ordinal));
        Assert.NotEmpty(ForbiddenTypes(modules));
        foreach (var shared in checkedAssemblies)
        {
            Assert.Empty(Violations(shared, modules));
        }
    }

    [Fact]
    public void Contracts_depend_on_nothing_but_other_contracts()
    {
        var allContracts = Assemblies.Where(a => a.GetName().Name!.EndsWith(".Contracts", StringComparison.Ordinal)).ToList();
        Assert.Equal(SharedAssemblies.Where(n => n.EndsWith(".Contracts", StringComparison.Ordinal)), allContracts.Select(a => a.GetName().Name!).Order(StringComparer.Ordinal));
        foreach (var contracts in allContracts)
        {
            var references = contracts.GetReferencedAssemblies().Select(r => r.Name!)
                .Where(n => n.StartsWith("ModularChat.", StringComparison.Ordinal) && !n.EndsWith(".Contracts", StringComparison.Ordinal));
            Assert.Empty(references);
        }
    }

    [Fact]
    public void The_rule_catches_a_dependency_on_a_module_implementation()
    {
        // The Host composes the modules, so it must show up as depending on them: proof the rule can fail.
        var host = Assemblies.Single(a => a.GetName().Name == "ModularChat.Host");
        Assert.NotEmpty(Violations(host, Modules.Select(m => m.GetName().Name!).ToArray()));
    }

    /// <summary>Types of <paramref name="assembly"/> that use any type of the <paramref name="forbiddenAssemblies"/>.</summary>
    private static IReadOnlyList<string> Violations(Assembly assembly, string[] forbiddenAssemblies)
    {
        var forbiddenTypes = ForbiddenTypes(forbiddenAssemblies);
        if (forbiddenTypes.Length == 0)
        {
            return [];
        }

        var result = Types.InAssembly(assembly).ShouldNot().HaveDependencyOnAny(forbiddenTypes).GetResult();
        return result.FailingTypeNames?.ToList() ?? [];
    }

    /// <summary>The full names of the types of <paramref name="forbiddenAssemblies"/>.</summary>
    private static string[] ForbiddenTypes(string[] forbiddenAssemblies)
        // Full type names, not namespace prefixes: "ModularChat.X." would also match the allowed "ModularChat.X.Contracts".
        => Assemblies.Where(a => forbiddenAssemblies.Contains(a.GetName().Name))
            .SelectMany(a => a.GetTypes())
            .Where(t => !t.FullName!.Contains('<', StringComparison.Ordinal))
            .Select(t => t.FullName!)
            .ToArray();

    private static bool IsModule(string name)
        => name.StartsWith("ModularChat.", StringComparison.Ordinal)
           && !name.EndsWith(".Contracts", StringComparison.Ordinal)
           && !name.EndsWith(".Tests", StringComparison.Ordinal)
           && name is not ("ModularChat.BuildingBlocks" or "ModularChat.Host" or "ModularChat.Testing");

    private static Assembly[] LoadModularChatAssemblies()
    {
        var directory = AppContext.BaseDirectory;
        return Directory.GetFiles(directory, "ModularChat.*.dll")
            .Select(path => Assembly.LoadFrom(path))
            .Where(a => !a.GetName().Name!.EndsWith(".Tests", StringComparison.Ordinal))
            .ToArray();
    }
}
